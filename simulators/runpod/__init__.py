"""A faithful local stand-in for Runpod: REST v2 control plane, serverless data plane and worker job API."""

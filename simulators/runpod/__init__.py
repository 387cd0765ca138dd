"""A faithful local stand-in for Runpod: GraphQL control plane, serverless data plane and worker job API."""

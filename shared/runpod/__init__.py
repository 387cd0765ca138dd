"""Runpod over plain HTTP: the client, its models and its error classification."""

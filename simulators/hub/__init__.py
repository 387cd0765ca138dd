"""Hugging Face Hub simulator: serves model repos from a local folder through the Hub's HTTP API."""

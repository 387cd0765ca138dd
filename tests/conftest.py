"""Test-wide setup. Emulators and the local stack come from tests/support (started once, or reused from `make up`)."""

import os

# huggingface_hub fetches a registry from its endpoint at import when telemetry is on; tests never reach the internet.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# A local stack this run starts shares its emulators with every other test: its scheduled sweep would sweep their
# deployments (expired on purpose) in the middle of a test. The sweep is tested by calling it; the stack's loop waits.
os.environ.setdefault("SWEEP_INTERVAL_S", "86400")

pytest_plugins = ["tests.support.stack"]

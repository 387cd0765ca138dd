"""Test-wide setup. Emulators and the local stack come from tests/support (started once, or reused from `make up`)."""

import os

# huggingface_hub fetches a registry from its endpoint at import when telemetry is on; tests never reach the internet.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

pytest_plugins = ["tests.support.stack"]

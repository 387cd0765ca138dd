"""Test-wide fixtures. Emulators come from tests/support (started once, or reused from `make up`)."""

import os

import pytest


@pytest.fixture(scope="session")
def firestore_emulator() -> str:
    return os.environ["FIRESTORE_EMULATOR_HOST"]


@pytest.fixture(scope="session")
def pubsub_emulator() -> str:
    return os.environ["PUBSUB_EMULATOR_HOST"]

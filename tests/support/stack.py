"""Pytest plugin: the real emulators, the S3 server and the whole local stack as session fixtures.

Register it in tests/conftest.py with ``pytest_plugins = ["tests.support.stack"]``.

* A running ``make up`` stack (``.local/stack.env``, healthy) is reused; set ``VISGATE_TEST_REUSE_STACK=0`` to
  ignore it. Otherwise the first test that needs a part starts it, once per run, in a temporary state folder, and
  the run stops it at the end.
* Under pytest-xdist every worker shares that one stack: the controller makes the state folder before the workers
  start (they inherit ``VISGATE_TEST_STACK_DIR``), a file lock lets one worker start a part while the others wait,
  and the controller stops it all at the end. Data is shared too: use fresh ids (uuid4) instead of wiping.
* Each fixture puts the variables its clients read into ``os.environ`` for the session
  (``FIRESTORE_EMULATOR_HOST``, ``PUBSUB_EMULATOR_HOST``, ...), and returns the address.

Fixtures: ``firestore_emulator`` (host:port), ``pubsub_emulator`` (host:port), ``tasks_emulator`` (host:port),
``s3_server`` (endpoint URL), ``local_stack`` (:class:`RunningStack`: everything, with the functions host).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from local.processes import Service
from local.stack import Stack, StackConfig, read_env_file

STACK_DIR_ENV = "VISGATE_TEST_STACK_DIR"
REUSE_ENV = "VISGATE_TEST_REUSE_STACK"
_OWNED_DIR = pytest.StashKey[Path]()


@dataclass(frozen=True)
class RunningStack:
    """The whole local stack as a test sees it."""

    env: Mapping[str, str]  # what stack.env holds: emulator hosts, URLs, secrets, S3 settings
    services: Mapping[str, Service]

    @property
    def functions_url(self) -> str:
        """Base URL of the functions host (``/intake``, ``/provision``, ... below it)."""
        return self.env["FUNCTIONS_BASE_URL"]

    @property
    def intake_url(self) -> str:
        """Base URL of the public API."""
        return self.env["PUBLIC_API_BASE_URL"]

    @property
    def project(self) -> str:
        """The Google Cloud project the emulators use."""
        return self.env["GOOGLE_CLOUD_PROJECT"]


def pytest_configure(config: pytest.Config) -> None:
    """In the controller (or a plain run): make the run's state folder, inherited by xdist workers through env."""
    if hasattr(config, "workerinput") or os.environ.get(STACK_DIR_ENV):
        return
    state_dir = Path(tempfile.mkdtemp(prefix="visgate-test-stack-"))
    os.environ[STACK_DIR_ENV] = str(state_dir)
    config.stash[_OWNED_DIR] = state_dir


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop whatever the run started, once every worker is done."""
    state_dir = config.stash.get(_OWNED_DIR, None)
    if state_dir is None:
        return
    Stack(StackConfig(state_dir=state_dir)).down()
    shutil.rmtree(state_dir, ignore_errors=True)
    os.environ.pop(STACK_DIR_ENV, None)


def reusable_stack() -> Stack | None:
    """The developer's ``make up`` stack, when it runs, is healthy and reuse is not turned off."""
    if os.environ.get(REUSE_ENV, "1") == "0":
        return None
    stack = Stack()
    services = stack.services()
    return stack if "functions" in services and stack.healthy(services) else None


def run_stack() -> Stack:
    """The stack this test run owns (state in ``VISGATE_TEST_STACK_DIR``)."""
    state_dir = os.environ.get(STACK_DIR_ENV)
    if not state_dir:
        raise RuntimeError(f"{STACK_DIR_ENV} is not set: register tests.support.stack as a pytest plugin")
    return Stack(StackConfig(state_dir=Path(state_dir)))


def stack_env(parts: tuple[str, ...]) -> dict[str, str]:
    """The environment of a stack that runs at least ``parts`` (reused or started)."""
    reused = reusable_stack()
    if reused is not None:
        return read_env_file(reused.env_file)
    stack = run_stack()
    return stack.environment(stack.ensure(parts))


def wipe_firestore(host: str, project: str) -> None:
    """Delete every document in the emulator. Global: do not use it where tests run in parallel (xdist)."""
    url = f"http://{host}/emulator/v1/projects/{project}/databases/(default)/documents"
    requests.delete(url, timeout=10).raise_for_status()


@pytest.fixture(scope="session")
def _session_env() -> Iterator[pytest.MonkeyPatch]:
    """One MonkeyPatch for the session's environment variables, undone at the end."""
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _export(patch: pytest.MonkeyPatch, env: Mapping[str, str], keys: tuple[str, ...]) -> None:
    for key in (*keys, "GOOGLE_CLOUD_PROJECT"):
        patch.setenv(key, env[key])


@pytest.fixture(scope="session")
def firestore_emulator(_session_env: pytest.MonkeyPatch) -> str:
    """The Firestore emulator's host:port (``FIRESTORE_EMULATOR_HOST`` and ``GOOGLE_CLOUD_PROJECT`` are set)."""
    env = stack_env(("firestore",))
    _export(_session_env, env, ("FIRESTORE_EMULATOR_HOST",))
    return env["FIRESTORE_EMULATOR_HOST"]


@pytest.fixture(scope="session")
def pubsub_emulator(_session_env: pytest.MonkeyPatch) -> str:
    """The Pub/Sub emulator's host:port (``PUBSUB_EMULATOR_HOST`` and ``GOOGLE_CLOUD_PROJECT`` are set)."""
    env = stack_env(("pubsub",))
    _export(_session_env, env, ("PUBSUB_EMULATOR_HOST",))
    return env["PUBSUB_EMULATOR_HOST"]


@pytest.fixture(scope="session")
def tasks_emulator(_session_env: pytest.MonkeyPatch) -> str:
    """The Cloud Tasks emulator's host:port (``CLOUD_TASKS_EMULATOR_HOST`` is set). It does not dedupe task names."""
    env = stack_env(("tasks",))
    _export(_session_env, env, ("CLOUD_TASKS_EMULATOR_HOST",))
    return env["CLOUD_TASKS_EMULATOR_HOST"]


@pytest.fixture(scope="session")
def s3_server(_session_env: pytest.MonkeyPatch) -> str:
    """The S3 server's endpoint URL; the AWS variables for it are set and the model-cache bucket exists."""
    env = stack_env(("s3",))
    keys = ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    _export(_session_env, env, keys)
    return env["AWS_ENDPOINT_URL_S3"]


@pytest.fixture(scope="session")
def local_stack(_session_env: pytest.MonkeyPatch) -> RunningStack:
    """The whole local stack with the functions host (reused from ``make up`` or started once); its env is set."""
    reused = reusable_stack()
    stack = reused if reused is not None else run_stack()
    services = stack.services() if reused is not None else stack.up()
    env = stack.environment(services) if reused is None else read_env_file(stack.env_file)
    for key, value in env.items():
        _session_env.setenv(key, value)
    return RunningStack(env=env, services=services)

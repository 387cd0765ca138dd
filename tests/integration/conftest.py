"""Fixtures for the functions: the real apps via functions-framework, wired to the emulators of tests/support."""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from functions_framework import create_app
from google.api_core import exceptions as gexc
from google.cloud import firestore, pubsub_v1
from werkzeug.serving import make_server

from local import bootstrap, processes
from local.functions_host import create_host_app
from shared import topology
from shared.topology import TOPIC_DEPLOYMENT_DELETE_REQUESTED, TOPIC_DEPLOYMENT_REQUESTED, TOPICS

# A ready deployment on an instant-worker endpoint; every Runpod key a test makes is registered with the simulator.
from tests.support.jobs import ready, register_runpod_key  # noqa: F401

# The provisioning harness's fixtures (models_root, provisioning_env, provisioning), for the per-function test files.
from tests.support.provisioning import models_root, provisioning, provisioning_env  # noqa: F401
from tests.support.receiver import receiver  # noqa: F401  (a webhook receiver for the tests that need one)
from tests.support.waiting import eventually

REPO = Path(__file__).resolve().parents[2]
PROJECT = "visgate-local"


@pytest.fixture(scope="session")
def runpod_simulator() -> Iterator[str]:
    """A Runpod simulator (instant workers) for the in-process functions: its base URL. Keys must be registered
    (``register_runpod_key``): the intake API verifies every new key with Runpod."""
    from simulators.runpod import openapi_contract
    from simulators.runpod.app import create_app as create_runpod
    from tests.support.runpod_contract import contract_violations
    from tests.support.serving import Served

    app = create_runpod(worker_mode="instant")
    app.exchanges = []  # every control-plane call of the suite, checked against Runpod's OpenAPI document at the end
    served = Served(app)
    app.set_base_url(served.url)
    yield served.url
    served.stop()
    app.shutdown()
    if openapi_contract.missing_reason() is None:
        violations = contract_violations(app.exchanges)
        assert not violations, "\n".join(violations[:20])


@pytest.fixture(scope="session")
def intake_env(
    firestore_emulator: str, pubsub_emulator: str, runpod_simulator: str, tasks_emulator: str
) -> Iterator[None]:
    """Settings for in-process functions; topics and queues exist (creating them is idempotent)."""
    os.environ["RUNPOD_API_BASE_URL"] = os.environ["RUNPOD_ENDPOINT_BASE_URL"] = runpod_simulator
    os.environ.setdefault("GOOGLE_CLOUD_PROJECT", PROJECT)
    os.environ.setdefault("TENANT_PEPPER", base64.b64encode(os.urandom(16)).decode())
    os.environ.setdefault("SEALING_KEY", base64.b64encode(os.urandom(32)).decode())
    os.environ.setdefault("METRICS_TOKEN", base64.b64encode(os.urandom(24)).decode())
    os.environ.setdefault("ALLOW_HTTP_LOOPBACK_WEBHOOKS", "true")
    from shared.config import BackgroundSettings, get_settings

    get_settings.cache_clear()
    publisher = pubsub_v1.PublisherClient()
    project = os.environ["GOOGLE_CLOUD_PROJECT"]
    for topic in TOPICS:
        try:
            publisher.create_topic(name=publisher.topic_path(project, topic))
        except gexc.AlreadyExists:
            pass
    bootstrap.create_queues(topology, project, get_settings(BackgroundSettings).region, tasks_emulator)
    yield
    from shared.intake.metrics import flush_all

    flush_all()  # while Firestore still runs (the exit-time flush would find it stopped)


@contextmanager
def functions_base_url(url: str) -> Iterator[None]:
    """``FUNCTIONS_BASE_URL`` for the functions built in the block (they read their settings once, when built)."""
    from shared.config import get_settings

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FUNCTIONS_BASE_URL", url)
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def job_functions(intake_env: None) -> Iterator[str]:
    """The jobs, webhooks and callback functions served in this process, for the intake of ``intake_client``: a
    job submitted through it is followed to its end (Runpod's call on its end reaching the callback function) and
    its webhook is sent, as in the stack. Their base URL."""
    port = processes.free_port()
    url = f"http://127.0.0.1:{port}"
    with functions_base_url(url):
        served = [topology.function(name) for name in ("job-watch", "webhooks", "callback")]
        app = create_host_app(served, REPO / "functions", os.environ["GOOGLE_CLOUD_PROJECT"])
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield url
    server.shutdown()


@pytest.fixture(scope="session")
def intake_client_factory(intake_env: None, job_functions: str) -> Callable[[], Any]:
    with functions_base_url(job_functions):
        app = create_app("intake", str(REPO / "functions/intake/main.py"), "http")
    return app.test_client


@pytest.fixture
def intake_client(intake_client_factory: Callable[[], Any]) -> Any:
    return intake_client_factory()


@pytest.fixture(scope="session")
def db(intake_env: None) -> firestore.Client:
    return firestore.Client(project=os.environ["GOOGLE_CLOUD_PROJECT"])


class TopicTap:
    """A pull subscription on a topic; finds the message of one deployment among everything published."""

    def __init__(self, topic: str) -> None:
        self._subscriber = pubsub_v1.SubscriberClient()
        project = os.environ["GOOGLE_CLOUD_PROJECT"]
        self._name = self._subscriber.subscription_path(project, f"tap-{topic}-{os.getpid()}-{id(self)}")
        self._subscriber.create_subscription(name=self._name, topic=f"projects/{project}/topics/{topic}")
        self._seen: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, deployment_id: str, timeout_s: float = 10.0) -> Any:
        (message,) = eventually(lambda: self._pull(deployment_id), timeout_s, what=f"no message for {deployment_id}")
        return message

    def _pull(self, deployment_id: str) -> tuple[Any, ...]:
        """(the message of the deployment,) once seen, else () after one pull."""
        with self._lock:
            if deployment_id not in self._seen:
                response = self._subscriber.pull(subscription=self._name, max_messages=50, timeout=5)
                if response.received_messages:
                    self._subscriber.acknowledge(
                        subscription=self._name, ack_ids=[m.ack_id for m in response.received_messages]
                    )
                for received in response.received_messages:
                    self._seen[received.message.attributes.get("deployment_id", "")] = received.message
            return (self._seen[deployment_id],) if deployment_id in self._seen else ()

    def close(self) -> None:
        self._subscriber.delete_subscription(subscription=self._name)


@pytest.fixture(scope="session")
def requested(intake_env: None) -> Iterator[TopicTap]:
    tap = TopicTap(TOPIC_DEPLOYMENT_REQUESTED)
    yield tap
    tap.close()


@pytest.fixture(scope="session")
def deleted(intake_env: None) -> Iterator[TopicTap]:
    tap = TopicTap(TOPIC_DEPLOYMENT_DELETE_REQUESTED)
    yield tap
    tap.close()

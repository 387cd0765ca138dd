"""The local stack itself: the functions host, push and task delivery through the real emulators, up/down.

Uses its own topology (tests/support/fixture_topology.py) and fixture functions that record what reaches them.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from google.cloud import pubsub_v1, tasks_v2
from google.protobuf import timestamp_pb2

from local import bootstrap, emulators, gen_infra, processes
from local.functions_host import PUBSUB_EVENT_TYPE
from local.processes import REPO_ROOT, Service
from local.stack import read_env_file
from shared import topology
from shared.topology import Function, PushSubscription, Queue
from tests.support import fixture_topology
from tests.support.fixture_functions.sink import received
from tests.support.waiting import eventually

SOURCE_ROOT = REPO_ROOT / "tests" / "support" / "fixture_functions"
PROJECT = "visgate-local"


@dataclass(frozen=True)
class FixtureHost:
    """A functions host serving the fixture topology, and the folder its functions record calls in."""

    service: Service
    sink: Path

    @property
    def url(self) -> str:
        return self.service.url


@pytest.fixture(scope="module")
def host(pubsub_emulator: str, tasks_emulator: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FixtureHost]:
    """The fixture host (the emulator fixtures come first: their env is what the host inherits)."""
    sink = tmp_path_factory.mktemp("fixture-host")
    env = {"FIXTURE_SINK_DIR": str(sink), "GOOGLE_CLOUD_PROJECT": PROJECT}
    service = emulators.start_functions_host(
        sink / "logs", env, topology="tests.support.fixture_topology", source_root=SOURCE_ROOT
    )
    yield FixtureHost(service, sink)
    processes.stop(service)


def wait_for(probe: Callable[[], list[dict[str, Any]]], timeout_s: float = 15.0) -> list[dict[str, Any]]:
    """Poll ``probe`` until it returns something."""
    return list(eventually(probe, timeout_s, what=f"nothing arrived within {timeout_s} s"))


def marked(host: FixtureHost, function: str, marker: str) -> Callable[[], list[dict[str, Any]]]:
    """A probe for the calls of ``function`` whose record mentions ``marker``."""
    return lambda: [entry for entry in received(host.sink, function) if marker in json.dumps(entry)]


def test_host_serves_each_function_on_its_path_without_redirect(host: FixtureHost) -> None:
    marker = uuid.uuid4().hex
    response = requests.post(f"{host.url}/echo_http", data=marker, timeout=10, allow_redirects=False)
    assert response.status_code == 200
    assert response.text == "recorded"
    assert wait_for(marked(host, "echo_http", marker))[0]["method"] == "POST"

    assert requests.get(f"{host.url}/echo_http/some/sub/path", timeout=10).status_code == 200
    assert requests.get(f"{host.url}/not_written_yet", timeout=10).status_code == 404
    health = requests.get(f"{host.url}/_host/health", timeout=10).json()
    assert health["functions"] == ["/echo_event", "/echo_http"]


def test_push_subscription_delivers_a_cloudevent(host: FixtureHost, pubsub_emulator: str) -> None:
    suffix = uuid.uuid4().hex[:12]
    topic, dead_letter = f"events-{suffix}", f"dead-{suffix}"
    topology = SimpleNamespace(
        TOPICS=(topic, dead_letter),
        SUBSCRIPTIONS=(PushSubscription(f"push-{suffix}", topic, "echo_event"),),
    )
    bootstrap.create_pubsub(topology, PROJECT, host.url, dead_letter)
    bootstrap.create_pubsub(topology, PROJECT, host.url, dead_letter)  # idempotent

    publisher = pubsub_v1.PublisherClient()
    message_id = publisher.publish(publisher.topic_path(PROJECT, topic), b'{"hello": "world"}', marker=suffix).result()

    (event,) = wait_for(marked(host, "echo_event", suffix))
    attributes = event["attributes"]
    assert attributes["type"] == PUBSUB_EVENT_TYPE
    assert attributes["source"] == f"//pubsub.googleapis.com/projects/{PROJECT}/topics/{topic}"
    assert attributes["id"] == message_id
    assert attributes["specversion"] == "1.0"
    assert attributes["time"]
    message = event["data"]["message"]
    assert json.loads(base64.b64decode(message["data"])) == {"hello": "world"}
    assert message["attributes"] == {"marker": suffix}
    assert message["messageId"] == message["message_id"] == message_id
    assert event["data"]["subscription"] == f"projects/{PROJECT}/subscriptions/push-{suffix}"


def test_scheduled_cloud_task_reaches_an_http_function(host: FixtureHost, tasks_emulator: str) -> None:
    suffix = uuid.uuid4().hex[:12]
    queue = Queue(f"queue-{suffix}", "echo_http", max_attempts=3, min_backoff_s=1, max_backoff_s=2)
    bootstrap.create_queues(SimpleNamespace(QUEUES=(queue,)), PROJECT, "us-central1", tasks_emulator)
    client = bootstrap.tasks_client(tasks_emulator)
    schedule_time = timestamp_pb2.Timestamp()
    schedule_time.FromDatetime(datetime.now(UTC) + timedelta(seconds=1.5))
    task = tasks_v2.Task(
        http_request=tasks_v2.HttpRequest(
            url=f"{host.url}/echo_http/task", http_method=tasks_v2.HttpMethod.POST, body=suffix.encode()
        ),
        schedule_time=schedule_time,
    )
    created_at = time.monotonic()
    client.create_task(parent=client.queue_path(PROJECT, "us-central1", queue.name), task=task)

    (call,) = wait_for(marked(host, "echo_http", suffix))
    assert time.monotonic() - created_at >= 1.0  # not before its schedule time
    assert call["path"] == "/task"  # the path below the function, as in production
    assert call["headers"]["X-Cloudtasks-Queuename"].endswith(queue.name)


def test_scheduler_loop_posts_each_schedule(host: FixtureHost, tmp_path: Path) -> None:
    (schedule,) = fixture_topology.SCHEDULES
    scheduler = emulators.start_scheduler(tmp_path, {}, host.url, "tests.support.fixture_topology")
    try:
        calls = wait_for(lambda: [e for e in received(host.sink, "echo_http") if e["path"] == "/tick"])
    finally:
        processes.stop(scheduler)
    assert calls[0]["headers"]["X-Cloudscheduler-Jobname"] == schedule.name


def test_fixture_topology_names_only_declared_functions() -> None:
    declared = {function.name for function in fixture_topology.FUNCTIONS}
    assert {subscription.function for subscription in fixture_topology.SUBSCRIPTIONS} <= declared
    assert {queue.function for queue in fixture_topology.QUEUES} <= declared
    assert all(isinstance(function, Function) for function in fixture_topology.FUNCTIONS)


def _local(*args: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # our own CLI
        [sys.executable, "-m", "local", *args, f"--state-dir={state_dir}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_up_then_down_leaves_no_process_behind(tmp_path: Path) -> None:
    up = _local("up", state_dir=tmp_path)
    assert up.returncode == 0, up.stderr[-3000:]
    printed = dict(line.split("=", 1) for line in up.stdout.splitlines())
    recorded = json.loads((tmp_path / "stack.json").read_text())["services"]
    pids = [entry["pid"] for entry in recorded.values()]
    try:
        assert {"INTAKE_URL", "FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "CLOUD_TASKS_EMULATOR_HOST"} <= set(
            printed
        )
        assert requests.get(printed["INTAKE_URL"].rsplit("/", 1)[0] + "/_host/health", timeout=10).ok
        assert (printed["DEMO_MODEL"], printed["DEMO_LORA"]) == ("visgate-tiny/sd-tiny", "visgate-tiny/sd-tiny-lora")
        assert read_env_file(tmp_path / "stack.env")["FIRESTORE_EMULATOR_HOST"] == printed["FIRESTORE_EMULATOR_HOST"]

        again = _local("up", state_dir=tmp_path)  # reuses the running stack
        assert again.returncode == 0, again.stderr[-3000:]
        assert again.stdout == up.stdout
    finally:
        down = _local("down", state_dir=tmp_path)
    assert down.returncode == 0, down.stderr[-3000:]
    assert not (tmp_path / "stack.json").exists()
    assert not [pid for pid in pids if processes.group_alive(pid)]


def test_terraform_variables_are_generated_from_the_topology() -> None:
    assert gen_infra.TFVARS.read_text() == gen_infra.tfvars_text(), "run: python -m local.gen_infra tfvars"
    rendered = gen_infra.render()
    assert set(rendered["functions"]) == {function.name for function in topology.FUNCTIONS}
    assert rendered["functions"]["provision"]["trigger_topic"] == topology.TOPIC_DEPLOYMENT_REQUESTED
    assert set(rendered["queues"]) == {queue.name for queue in topology.QUEUES}
    # allUsers may invoke these (infra/modules/functions): the API, and the callback that Runpod workers (no Google
    # identity) call with signed reports. Every other function takes only the invoker identity.
    assert {name for name, fn in rendered["functions"].items() if fn["public"]} == {"intake", "callback"}


def test_function_bundles_hold_main_shared_and_the_functions_lock(tmp_path: Path) -> None:
    staged = gen_infra.bundle(tmp_path)
    assert {folder.name for folder in staged} == {function.name for function in topology.FUNCTIONS}
    for folder in staged:
        assert (folder / "main.py").is_file()
        assert (folder / "shared" / "topology.py").is_file()
        # The whole closure with hashes: the builder's pip installs exactly what the tests ran with, or fails.
        assert (folder / "requirements.txt").read_bytes() == gen_infra.FUNCTIONS_LOCK.read_bytes()
        assert "--hash=sha256:" in (folder / "requirements.txt").read_text()

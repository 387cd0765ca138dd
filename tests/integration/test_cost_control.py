"""Cost control against the emulators and the Runpod simulator: the sweep, stop and start, and the fault matrix.

The functions run in a functions host as in tests/support/provisioning.py (provision, callback, readiness, cleanup
and sweep).
The sweep is driven in-process (:func:`run_sweep` with a fan-out that keeps this test's items, then
:func:`sweep_one` per item, with a clock moved past the deadline instead of waiting for it) except in
``test_the_scheduled_run_fans_out_through_cloud_tasks``, which POSTs the function as Cloud Scheduler does and lets the
Cloud Tasks emulator deliver. A delete the sweep requests is delivered to cleanup as the Pub/Sub push would.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from functions_framework import create_app
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2

from local.processes import free_port
from shared.crypto import Sealer, tenant_id
from shared.deployments.deps import StepDeps
from shared.deployments.endpoint_spec import is_resource_of, resource_name
from shared.deployments.sweep import run_sweep, sweep_one
from shared.document import Deployment
from shared.errors import RetryableError
from shared.lifecycle import Status
from shared.messages import SweepItem
from shared.runpod.client import EndpointSpec, GpuSelection, QueueDelayScaling, RunpodConnector, WorkerLimits
from shared.store import DeploymentStore, utcnow
from shared.topology import QUEUE_READINESS, QUEUE_SWEEP, TOPIC_DEPLOYMENT_DELETE_REQUESTED, function
from tests.support.provisioning import ALL_POOLS, FAST_WATCHDOG, Env
from tests.support.serving import Served
from tests.support.waiting import eventually

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = float(FAST_WATCHDOG["READINESS_DEADLINE_S"])
DELETING_DEADLINE_S = 120.0


@dataclass
class Cost:
    e: Env
    deps: StepDeps
    intake: Any

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def cost(
    intake_env: None,
    tasks_emulator: str,
    models_root: Path,
    db: Any,
    runpod_simulator: str,
) -> Iterator[Cost]:
    from local.functions_host import create_host_app
    from shared.config import BackgroundSettings, IntakeSettings, get_settings
    from shared.wiring import step_deps
    from simulators.hub.app import create_app as create_hub

    hub = Served(create_hub(models_root))
    port = free_port()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {
            "HF_ENDPOINT": hub.url,
            "FUNCTIONS_BASE_URL": f"http://127.0.0.1:{port}",
            "DELETING_DEADLINE_S": str(DELETING_DEADLINE_S),
            **FAST_WATCHDOG,
        }.items():
            patch.setenv(key, value)
        get_settings.cache_clear()
        settings = get_settings(BackgroundSettings)
        _ensure_queues(settings.google_cloud_project, settings.region, tasks_emulator)
        wanted = [function(name) for name in ("provision", "callback", "readiness", "cleanup", "sweep")]
        host = Served(create_host_app(wanted, REPO / "functions", settings.google_cloud_project), port)
        sealer = Sealer(settings.sealing_key.get_secret_value())
        pepper = get_settings(IntakeSettings).tenant_pepper.get_secret_value()
        env = Env(DeploymentStore(db), sealer, pepper, runpod_simulator, host.url)
        deps = step_deps(settings)
        # The deletes the in-process sweep requests are delivered by deliver_deletes, to this host: a stack reused
        # in the same Pub/Sub emulator (make up, the e2e test's) subscribes to the topic with other settings.
        deps = replace(deps, publisher=HeldDeletes(deps.publisher))
        # An intake of its own, built here: its tasks (the watchdog of a start) come to this host.
        intake = create_app("intake", str(REPO / "functions/intake/main.py"), "http").test_client()
        yield Cost(env, deps, intake)
        host.stop()
        hub.stop()
    get_settings.cache_clear()


class HeldDeletes:
    """The step's publisher, except that ``deployment-delete-requested`` stays here (see ``deliver_deletes``)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def publish(self, topic: str, message: Any, **attributes: str) -> str:
        if topic == TOPIC_DEPLOYMENT_DELETE_REQUESTED:
            return "held"
        return str(self._inner.publish(topic, message, **attributes))

    def topic_path(self, topic: str) -> str:
        return str(self._inner.topic_path(topic))


def _ensure_queues(project: str, region: str, tasks_host: str) -> None:
    from shared.wiring import build_tasks_client

    client = build_tasks_client(tasks_host)
    parent = f"projects/{project}/locations/{region}"
    for name in (QUEUE_READINESS, QUEUE_SWEEP):
        try:
            client.create_queue(parent=parent, queue=tasks_v2.Queue(name=f"{parent}/queues/{name}"))
        except gexc.AlreadyExists:
            pass


@pytest.fixture
def c(cost: Cost) -> Iterator[Cost]:
    yield cost
    cost.e.scenario(
        capacity={}, start_delay_s=0, crash_on_start=False, worker_report="ready", api_errors=0, rate_limit=0
    )


# --- helpers ----------------------------------------------------------------------------------------------------


def sweep(c: Cost, ids: set[str], at: datetime | None = None) -> list[SweepItem]:
    """One sweep run at ``at`` (a clock moved forward), its items of ``ids`` handled as the tasks would be (a task
    that fails is retried), and the deletes it requested delivered to cleanup."""
    at = at or utcnow()
    items: list[SweepItem] = []
    run_sweep(c.deps, now=at, fanout=lambda found: items.extend(i for i in found if i.deployment_id in ids))
    for item in items:
        for _ in range(10):
            try:
                sweep_one(item, c.deps, now=at)
                break
            except RetryableError:
                time.sleep(0.1)
    deliver_deletes(c, ids)
    return items


def deliver_deletes(c: Cost, ids: set[str]) -> None:
    for deployment_id in ids:
        doc = c.e.doc(deployment_id)
        if doc.status is not Status.DELETING:
            continue
        payload = {
            "deployment_id": deployment_id,
            "requested_at": utcnow().isoformat(),
            "reason": doc.delete_reason or "user",
        }
        for _ in range(10):
            if c.e.push("cleanup", TOPIC_DEPLOYMENT_DELETE_REQUESTED, payload).status_code == 200:
                break
            time.sleep(0.1)


def endpoints_of(c: Cost, key: str, deployment_id: str) -> list[dict[str, Any]]:
    return [ep for ep in c.e.runpod_state(key)["endpoints"] if is_resource_of(ep["name"], deployment_id)]


def ready(c: Cost, key: str, **body: Any) -> str:
    deployment_id = c.e.create(key, **body)
    assert c.e.provision(deployment_id).status_code == 200
    c.e.wait_status(deployment_id, Status.READY)
    return deployment_id


def stray_endpoint(c: Cost, key: str, deployment_id: str) -> str:
    """An endpoint named for the deployment that nothing recorded (what a crash between create and record leaves)."""
    settings = c.deps.settings
    client = RunpodConnector(settings.runpod_api_base_url, settings.runpod_endpoint_base_url, 5).client(key)
    spec = EndpointSpec(
        name=resource_name(deployment_id),
        image=settings.worker_image,
        env={},
        disk=20,
        gpu=GpuSelection(pools=["AMPERE_16"]),
        workers=WorkerLimits(min=0, max=1, idleTimeout=5),
        scaling=QueueDelayScaling(queueDelay=4),
        flashboot="OFF",
        timeout=600_000,
    )
    return client.create_endpoint(spec).id


def log_text(c: Cost, deployment_id: str) -> str:
    return "\n".join(str(line.get("message")) for line in c.e.store.events(deployment_id))


# --- stop and start ---------------------------------------------------------------------------------------------


def test_stop_scales_to_zero_and_start_proves_the_model_again(c: Cost) -> None:
    key = c.e.account()
    deployment_id = ready(c, key, workers_max=2)
    url = f"/v1/deployments/{deployment_id}"

    stopped = c.intake.post(f"{url}/stop", headers=c.auth(key))
    assert (stopped.status_code, stopped.json) == (202, {"deployment_id": deployment_id, "status": "stopped"})
    doc = c.e.doc(deployment_id)
    assert doc.status is Status.STOPPED
    assert doc.stopped_at is not None
    endpoint = endpoints_of(c, key, deployment_id)[0]
    assert (endpoint["workers"]["min"], endpoint["workers"]["max"]) == (0, 0)
    assert c.intake.post(f"{url}/stop", headers=c.auth(key)).status_code == 202  # idempotent
    refused = c.intake.post(f"{url}/start", headers=c.auth(c.e.account()))
    assert refused.status_code == 404  # someone else's

    started = c.intake.post(f"{url}/start", headers=c.auth(key))
    assert (started.status_code, started.json["status"]) == (202, "downloading_model")
    endpoint = endpoints_of(c, key, deployment_id)[0]
    assert (endpoint["workers"]["min"], endpoint["workers"]["max"]) == (0, 2)
    again = c.intake.post(f"{url}/start", headers=c.auth(key))
    assert again.status_code in (202, 409)  # 202 while it restarts; 409 once ready again
    doc = c.e.wait_status(deployment_id, Status.READY)
    assert doc.started_at is not None and doc.phase_timestamps[Status.READY] > doc.started_at
    warmups = [j for j in c.e.runpod_state(key)["jobs"] if j["input"] == {"warmup": True}]
    assert len(warmups) == 2  # the first provisioning's and the restart's
    assert "started by the owner" in log_text(c, deployment_id)

    view = c.intake.get(url, headers=c.auth(key)).json
    assert view["stopped_at"] is not None


def test_a_start_whose_worker_crashes_fails_by_the_watchdog_not_the_deadline(c: Cost) -> None:
    key = c.e.account()
    deployment_id = ready(c, key)
    url = f"/v1/deployments/{deployment_id}"
    assert c.intake.post(f"{url}/stop", headers=c.auth(key)).status_code == 202
    c.e.scenario(crash_on_start=True)
    try:
        started = c.intake.post(f"{url}/start", headers=c.auth(key))
        assert (started.status_code, started.json["status"]) == (202, "downloading_model")
        doc = c.e.wait_status(deployment_id, Status.FAILED, timeout_s=20)  # READINESS_DEADLINE_S here is 60 s
    finally:
        c.e.scenario(crash_on_start=False)
    assert doc.error is not None and doc.error.code == "image_pull_failed"  # this start's worker never reported
    assert doc.readiness.generation == 1
    assert eventually(lambda: endpoints_of(c, key, deployment_id) == [])  # torn down, as any failure


def test_stop_and_start_refuse_other_states_naming_the_status(c: Cost) -> None:
    key = c.e.account()
    deployment_id = c.e.create(key)  # validating
    for action in ("stop", "start"):
        resp = c.intake.post(f"/v1/deployments/{deployment_id}/{action}", headers=c.auth(key))
        assert resp.status_code == 409
        assert resp.json["error"]["code"] == "invalid_state"
        assert "validating" in resp.json["error"]["message"]
    live = ready(c, key)
    resp = c.intake.post(f"/v1/deployments/{live}/start", headers=c.auth(key))
    assert (resp.status_code, resp.json["error"]["details"]) == (409, {"status": "ready"})


def test_a_stopped_deployment_is_still_subject_to_ttl(c: Cost) -> None:
    key = c.e.account()
    deployment_id = ready(c, key)
    assert c.intake.post(f"/v1/deployments/{deployment_id}/stop", headers=c.auth(key)).status_code == 202
    c.e.set(deployment_id, ttl_minutes=10, expires_at=utcnow())

    items = sweep(c, {deployment_id})

    assert [i.action for i in items if i.deployment_id == deployment_id and i.action != "orphans"] == ["ttl"]
    doc = c.e.wait_status(deployment_id, Status.DELETED)
    assert doc.delete_reason == "ttl"
    assert endpoints_of(c, key, deployment_id) == []


def test_create_takes_idle_delete_minutes_and_the_view_shows_delete_reason(c: Cost) -> None:
    key = c.e.account()
    resp = c.intake.post(
        "/v1/deployments",
        json={"hf_model_id": "org/model", "idle_delete_minutes": 30, "ttl_minutes": 60},
        headers=c.auth(key),
    )
    assert resp.status_code == 202, resp.json
    deployment_id = resp.json["deployment_id"]
    view = c.intake.get(f"/v1/deployments/{deployment_id}", headers=c.auth(key)).json
    assert (view["idle_delete_minutes"], view["ttl_minutes"], view["delete_reason"]) == (30, 60, None)
    too_short = c.intake.post(
        "/v1/deployments", json={"hf_model_id": "org/model", "idle_delete_minutes": 5}, headers=c.auth(key)
    )
    assert too_short.status_code == 400
    c.intake.delete(f"/v1/deployments/{deployment_id}", headers=c.auth(key))
    assert c.e.doc(deployment_id).delete_reason == "user"


# --- the sweep at scale and through Cloud Tasks -----------------------------------------------------------------


def test_a_sweep_of_500_deployments_handles_each_once(c: Cost) -> None:
    key = c.e.account()
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: c.e.create(key, ttl_minutes=10), range(500)))
    past = utcnow()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda d: c.e.set(d, expires_at=past), ids))
    at = utcnow()

    first: list[SweepItem] = []
    second: list[SweepItem] = []
    report = run_sweep(c.deps, now=at, fanout=lambda found: first.extend(i for i in found if i.deployment_id in ids))
    run_sweep(c.deps, now=at, fanout=lambda found: second.extend(i for i in found if i.deployment_id in ids))
    ttl = [i for i in first if i.action == "ttl"]
    assert sorted(i.deployment_id for i in ttl) == sorted(ids)  # each once
    assert report.fanned_out["ttl"] >= 500
    # A second run in the same minute makes the same task names, which Cloud Tasks refuses as duplicates.
    from shared.deployments.sweep import task_name

    assert {task_name(i.action, i.deployment_id, i.run_at) for i in first} == {
        task_name(i.action, i.deployment_id, i.run_at) for i in second
    }

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda i: sweep_one(i, c.deps, now=at), ttl + ttl))  # every task delivered twice
    assert outcomes.count("delete requested (ttl)") == 500
    assert all(o.startswith("not due any more") for o in outcomes if o != "delete requested (ttl)")
    docs = [c.e.doc(d) for d in ids]
    assert {(d.status, d.delete_reason) for d in docs} == {(Status.DELETING, "ttl")}
    after: list[SweepItem] = []
    run_sweep(c.deps, now=at, fanout=lambda found: after.extend(i for i in found if i.deployment_id in ids))
    assert [i for i in after if i.action == "ttl"] == []


def test_the_scheduled_run_fans_out_through_cloud_tasks(c: Cost) -> None:
    key = c.e.account()
    deployment_id = ready(c, key)
    c.e.set(deployment_id, ttl_minutes=10, expires_at=utcnow())

    resp = requests.post(
        f"{c.e.functions}/sweep/run", json={}, headers={"X-CloudScheduler-JobName": "sweep"}, timeout=60
    )

    assert resp.status_code == 200, resp.text
    assert resp.json()["fanned_out"]["ttl"] >= 1
    doc = c.e.wait_status(deployment_id, Status.DELETING, Status.DELETED)  # the task ran the sweep function
    assert doc.delete_reason == "ttl"
    deliver_deletes(c, {deployment_id})
    assert c.e.wait_status(deployment_id, Status.DELETED).delete_reason == "ttl"


def test_the_sweep_purges_expired_records(c: Cost) -> None:
    from shared.server_records import RATE_LIMITS, SEEN_REPORTS
    from shared.store import IDEMPOTENCY

    db = c.deps.store._db
    old = utcnow() - timedelta(minutes=1)
    names = [uuid.uuid4().hex for _ in range(3)]
    for name in names:
        db.collection(IDEMPOTENCY).document(name).set({"expires_at": old})
        db.collection(RATE_LIMITS).document(name).set({"count": 1, "expires_at": old})
        assert c.deps.store.remember_report(name, "msg_x", old)  # a report id past its window
    db.collection(RATE_LIMITS).document(names[0] + "-live").set({"count": 1, "expires_at": utcnow() + timedelta(1)})

    report = run_sweep(c.deps, fanout=lambda _: None)

    assert report.purged[IDEMPOTENCY] >= 3 and report.purged[RATE_LIMITS] >= 3
    assert not any(db.collection(IDEMPOTENCY).document(n).get().exists for n in names)
    assert report.purged[SEEN_REPORTS] >= 3
    assert all(c.deps.store.remember_report(n, "msg_x", old) for n in names)  # purged: taken as new again
    assert db.collection(RATE_LIMITS).document(names[0] + "-live").get().exists


# --- the fault matrix -------------------------------------------------------------------------------------------


@dataclass
class Row:
    failure: str
    deployment_id: str
    key: str
    started: float
    expect_status: Status
    expect_reason: str | None
    note_in_log: str | None = None
    seconds: float = 0.0


def _row(c: Cost, failure: str, expect: Status, reason: str | None, note: str | None = None) -> Row:
    key = c.e.account()
    return Row(failure, "", key, time.monotonic(), expect, reason, note)


def _crash_before_record(c: Cost) -> Row:
    row = _row(c, "crash after endpoint create, before record", Status.FAILED, "timeout")
    row.deployment_id = c.e.create(row.key)
    c.e.move(row.deployment_id, Status.CREATING_ENDPOINT)
    stray_endpoint(c, row.key, row.deployment_id)
    sweep(c, {row.deployment_id}, at=utcnow() + timedelta(seconds=DEADLINE_S + 1))
    return row


def _worker_crashes(c: Cost) -> Row:
    row = _row(c, "worker crashes at start", Status.FAILED, "image_pull_failed")
    c.e.scenario(crash_on_start=True)
    row.deployment_id = c.e.create(row.key)
    c.e.provision(row.deployment_id)
    c.e.wait_status(row.deployment_id, Status.FAILED)
    sweep(c, {row.deployment_id})
    return row


def _worker_never_starts(c: Cost) -> Row:
    row = _row(c, "worker never starts (deadline)", Status.FAILED, "timeout")
    c.e.scenario(start_delay_s=3600)
    row.deployment_id = c.e.create(row.key)
    c.e.provision(row.deployment_id)
    sweep(c, {row.deployment_id}, at=utcnow() + timedelta(seconds=DEADLINE_S + 1))
    return row


def _no_capacity(c: Cost) -> Row:
    row = _row(c, "no capacity in any pool", Status.FAILED, "no_capacity")
    c.e.scenario(capacity=dict.fromkeys(ALL_POOLS, 0))
    row.deployment_id = c.e.create(row.key)
    c.e.provision(row.deployment_id)
    c.e.wait_status(row.deployment_id, Status.FAILED, timeout_s=30)
    sweep(c, {row.deployment_id})
    return row


def _delete_during_provisioning(c: Cost) -> Row:
    row = _row(c, "delete during provisioning", Status.DELETED, "user")
    row.deployment_id = c.e.create(row.key)
    provisioning = threading.Thread(target=c.e.provision, args=(row.deployment_id,))
    provisioning.start()
    time.sleep(0.05)
    c.e.delete(row.deployment_id)
    provisioning.join()
    sweep(c, {row.deployment_id})
    return row


def _delete_twice(c: Cost) -> Row:
    row = _row(c, "delete twice", Status.DELETED, "user")
    row.deployment_id = ready(c, row.key)
    assert c.e.delete(row.deployment_id).status_code == 200
    assert c.e.delete(row.deployment_id).status_code == 200
    sweep(c, {row.deployment_id})
    return row


def _ttl(c: Cost) -> Row:
    row = _row(c, "TTL expiry", Status.DELETED, "ttl")
    row.deployment_id = ready(c, row.key, ttl_minutes=10)
    sweep(c, {row.deployment_id}, at=utcnow() + timedelta(minutes=10))
    return row


def _idle(c: Cost) -> Row:
    row = _row(c, "idle expiry", Status.DELETED, "idle")
    row.deployment_id = ready(c, row.key)
    c.e.set(row.deployment_id, idle_delete_minutes=10)
    assert sweep(c, {row.deployment_id}, at=utcnow() + timedelta(minutes=5))  # not idle long enough yet
    assert c.e.doc(row.deployment_id).status is Status.READY
    sweep(c, {row.deployment_id}, at=utcnow() + timedelta(minutes=11))
    return row


def _orphan(c: Cost) -> Row:
    row = _row(c, "orphan left by a crash", Status.DELETED, None, note="orphaned Runpod endpoint")
    live = ready(c, row.key)
    row.deployment_id = c.e.create(row.key)
    c.e.move(row.deployment_id, Status.DELETED)  # its record says deleted; the crash left its endpoint behind
    stray_endpoint(c, row.key, row.deployment_id)
    sweep(c, {row.deployment_id, live})
    assert c.e.doc(live).status is Status.READY and endpoints_of(c, row.key, live)  # a live one is left alone
    c.e.delete(live)
    return row


def _runpod_errors(c: Cost) -> Row:
    row = _row(c, "Runpod 5xx and 429 through a teardown", Status.DELETED, "user", note="longer than its deadline")
    row.deployment_id = ready(c, row.key)
    c.e.scenario(rate_limit=1, api_errors=2)
    assert c.e.delete(row.deployment_id).status_code == 500  # Pub/Sub would redeliver; the sweep retries too
    for _ in range(5):
        sweep(c, {row.deployment_id}, at=utcnow() + timedelta(seconds=DELETING_DEADLINE_S + 1))
        if c.e.doc(row.deployment_id).status is Status.DELETED:
            break
    return row


FAULTS = (
    _crash_before_record,
    _worker_crashes,
    _worker_never_starts,
    _no_capacity,
    _delete_during_provisioning,
    _delete_twice,
    _ttl,
    _idle,
    _orphan,
    _runpod_errors,
)


def test_fault_matrix(c: Cost, capsys: pytest.CaptureFixture[str]) -> None:
    rows: list[tuple[Row, Deployment, int]] = []
    for fault in FAULTS:
        row = fault(c)
        c.e.scenario(capacity={}, start_delay_s=0, crash_on_start=False, api_errors=0, rate_limit=0)
        deadline = time.monotonic() + 10
        while endpoints_of(c, row.key, row.deployment_id) and time.monotonic() < deadline:
            time.sleep(0.05)
        row.seconds = time.monotonic() - row.started
        rows.append((row, c.e.doc(row.deployment_id), len(endpoints_of(c, row.key, row.deployment_id))))

    table = [
        "| failure point | final status | reason | Runpod resources left | seconds to clean |",
        "|---|---|---|---|---|",
    ]
    for row, doc, left in rows:
        reason = doc.error.code if doc.error else doc.delete_reason
        table.append(f"| {row.failure} | {doc.status.value} | {reason or '-'} | {left} | {row.seconds:.1f} |")
    with capsys.disabled():
        print("\n" + "\n".join(table))

    for row, doc, left in rows:
        assert left == 0, row.failure
        assert doc.status is row.expect_status, row.failure
        reason = doc.error.code if doc.error else doc.delete_reason
        assert reason == row.expect_reason, row.failure
        if row.note_in_log:
            assert row.note_in_log in log_text(c, row.deployment_id), row.failure
    assert tenant_id  # the tenant of each row is its own fresh account


def test_the_deleted_event_carries_the_reason(c: Cost) -> None:
    import json
    import os

    from google.cloud import pubsub_v1

    from shared.topology import TOPIC_DEPLOYMENT_EVENTS

    subscriber = pubsub_v1.SubscriberClient()
    project = os.environ["GOOGLE_CLOUD_PROJECT"]
    name = subscriber.subscription_path(project, f"tap-cost-{uuid.uuid4().hex[:8]}")
    subscriber.create_subscription(name=name, topic=f"projects/{project}/topics/{TOPIC_DEPLOYMENT_EVENTS}")
    try:
        key = c.e.account()
        deployment_id = ready(c, key, ttl_minutes=10)
        sweep(c, {deployment_id}, at=utcnow() + timedelta(minutes=10))
        assert c.e.doc(deployment_id).status is Status.DELETED
        seen: dict[str, Any] = {}

        def pulled() -> bool:
            response = subscriber.pull(subscription=name, max_messages=100, timeout=5)
            for received in response.received_messages:
                event = json.loads(received.message.data)
                if event["deployment_id"] == deployment_id:
                    seen[event["status"]] = event
            if response.received_messages:
                subscriber.acknowledge(subscription=name, ack_ids=[m.ack_id for m in response.received_messages])
            return "deleted" in seen

        eventually(pulled, 10, interval_s=0)
        assert seen["deleting"]["delete_reason"] == "ttl"
        assert seen["deleted"]["delete_reason"] == "ttl"
        assert seen.get("ready", {}).get("delete_reason") is None
    finally:
        subscriber.delete_subscription(subscription=name)

"""readiness (Cloud Tasks ``readiness``) end to end: the watchdog of a silent worker switches GPU pools when they
have no capacity, fails crashed and late deployments, and resumes after a failed step.

The harness (the functions host, the simulators, ``Env``) is tests/support/provisioning.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from shared.lifecycle import Status
from shared.store import DeploymentStore, utcnow
from shared.topology import QUEUE_READINESS
from tests.support.provisioning import (
    ALL_POOLS,
    FIRST_WINDOW,
    SECOND_WINDOW,
    Env,
    _nothing_left,
    _provisioned_unwatched,
    _settings,
)
from tests.support.waiting import eventually


def test_no_capacity_in_the_first_pools_switches_to_the_next_ones(provisioning: Env, intake_client: Any) -> None:
    key = provisioning.account()
    provisioning.scenario(capacity=dict.fromkeys(FIRST_WINDOW, 0))
    deployment_id = provisioning.create(key)

    provisioning.provision(deployment_id)
    doc = provisioning.wait_status(deployment_id, Status.READY, Status.FAILED, timeout_s=20)

    assert doc.status == Status.READY.value, doc.error
    assert doc.gpu.window == SECOND_WINDOW  # what the user sees: the pools the endpoint now uses
    assert doc.gpu.switches == 1
    log = [line["message"] for line in provisioning.store.events(deployment_id)]
    assert any("switched the endpoint to AMPERE_48" in line for line in log)
    endpoint = provisioning.runpod_state(key)["endpoints"][0]
    assert endpoint["gpu"]["pools"] == SECOND_WINDOW
    seen = intake_client.get(f"/v1/deployments/{deployment_id}", headers={"Authorization": f"Bearer {key}"})
    assert seen.status_code == 200
    assert seen.json["gpu_pool"] == SECOND_WINDOW[0]  # the pool the worker landed in
    assert seen.json["gpu_candidates"] == SECOND_WINDOW


def test_no_capacity_anywhere_fails_and_leaves_nothing(provisioning: Env) -> None:
    key = provisioning.account()
    provisioning.scenario(capacity=dict.fromkeys(ALL_POOLS, 0))
    deployment_id = provisioning.create(key)

    provisioning.provision(deployment_id)
    doc = provisioning.wait_status(deployment_id, Status.FAILED, timeout_s=20)

    assert doc.error.code == "no_capacity"
    eventually(_nothing_left(provisioning, key))


def test_a_worker_that_crashes_at_start_fails_the_deployment(provisioning: Env) -> None:
    key = provisioning.account()
    provisioning.scenario(crash_on_start=True)
    deployment_id = provisioning.create(key)

    provisioning.provision(deployment_id)

    doc = provisioning.wait_status(deployment_id, Status.FAILED)
    assert doc.error.code == "image_pull_failed"
    eventually(_nothing_left(provisioning, key))


def test_past_the_deadline_the_watchdog_fails_with_timeout(provisioning: Env) -> None:
    from datetime import timedelta

    key = provisioning.account()
    provisioning.scenario(start_delay_s=30)
    deployment_id = provisioning.create(key)
    provisioning.provision(deployment_id)
    long_ago = utcnow() - timedelta(hours=1)
    provisioning.set(
        deployment_id,
        phase_timestamps={**provisioning.doc(deployment_id).phase_timestamps, Status.CREATING_ENDPOINT: long_ago},
    )

    answer = requests.post(
        f"{provisioning.functions}/readiness",
        json={"deployment_id": deployment_id, "check": 1000},
        headers={"X-CloudTasks-TaskName": f"readiness-{deployment_id}-1000", "X-CloudTasks-TaskRetryCount": "0"},
        timeout=10,
    )

    assert answer.status_code == 204
    doc = provisioning.doc(deployment_id)
    assert doc.status == Status.FAILED.value
    assert doc.error.code == "timeout"
    assert _nothing_left(provisioning, key)()


def _throttled_everywhere(provisioning: Env, key: str) -> str:
    """A provisioned deployment whose worker waits for capacity, throttled since long ago; returns its id."""
    from datetime import timedelta

    provisioning.scenario(capacity=dict.fromkeys(ALL_POOLS, 0))
    deployment_id = _provisioned_unwatched(provisioning, key)
    long_ago = utcnow() - timedelta(minutes=5)
    provisioning.set(deployment_id, readiness={"check": 0, "last_check_at": long_ago, "throttled_since": long_ago})
    eventually(lambda: [w["state"] for w in provisioning.runpod_state(key)["workers"]] == ["throttled"])
    return deployment_id


def _check(deployment_id: str, check: int) -> Any:
    from shared.envelopes import TaskDelivery
    from shared.messages import ReadinessCheck

    message = ReadinessCheck(deployment_id=deployment_id, check=check)
    return TaskDelivery(message, task_name=f"readiness-{deployment_id}-{check}", retry_count=0, queue=QUEUE_READINESS)


def test_a_gpu_switch_retried_after_a_failed_publish_switches_once(provisioning: Env) -> None:
    from shared.deployments.readiness import check_readiness
    from shared.errors import RetryableError
    from shared.pubsub import Publisher
    from shared.tasks import TaskScheduler
    from shared.topology import TOPIC_DEPLOYMENT_EVENTS
    from shared.wiring import step_deps

    key = provisioning.account()
    deployment_id = _throttled_everywhere(provisioning, key)
    deps = step_deps(_settings())
    real_publish = Publisher.publish_bytes
    published: list[dict[str, str]] = []

    def publish_fails_once(self: Publisher, topic: str, data: bytes, attributes: dict[str, str], **kw: Any) -> str:
        if topic == TOPIC_DEPLOYMENT_EVENTS and attributes.get("ce-subject") == deployment_id:
            published.append(attributes)
            if len(published) == 1:
                raise RetryableError("Pub/Sub is unavailable")
        return real_publish(self, topic, data, attributes, **kw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Publisher, "publish_bytes", publish_fails_once)
        patch.setattr(TaskScheduler, "schedule", lambda *args, **kwargs: True)
        with pytest.raises(RetryableError):
            check_readiness(_check(deployment_id, 1), deps)
        eventually(lambda: [w["state"] for w in provisioning.runpod_state(key)["workers"]] == ["throttled"])
        check_readiness(_check(deployment_id, 1), deps)  # Cloud Tasks retries the same check

    doc = provisioning.doc(deployment_id)
    assert (doc.gpu.switches, doc.gpu.window) == (1, SECOND_WINDOW)
    assert provisioning.runpod_state(key)["endpoints"][0]["gpu"]["pools"] == SECOND_WINDOW
    # The same CloudEvent both times (the retry repeats its id: subscribers dedupe), then no other switch.
    assert [(a["ce-type"], a["ce-id"]) for a in published] == [
        ("visgate.deployment.gpu_switched", f"{deployment_id}:gpu_switch:1")
    ] * 2


def test_a_check_retried_after_the_switch_was_written_gives_the_new_pools_their_wait(provisioning: Env) -> None:
    from shared.deployments.readiness import check_readiness
    from shared.errors import RetryableError
    from shared.tasks import TaskScheduler
    from shared.wiring import step_deps

    key = provisioning.account()
    deployment_id = _throttled_everywhere(provisioning, key)
    deps = step_deps(_settings())
    real_update = DeploymentStore.update
    failed: list[bool] = []

    def next_check_write_fails_once(self: DeploymentStore, deployment_id: str, change: Any, **kwargs: Any) -> Any:
        if change.__name__ == "record_check" and not failed:  # the write that records the check
            failed.append(True)
            raise RetryableError("Firestore kept changing")
        return real_update(self, deployment_id, change, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DeploymentStore, "update", next_check_write_fails_once)
        patch.setattr(TaskScheduler, "schedule", lambda *args, **kwargs: True)
        with pytest.raises(RetryableError):
            check_readiness(_check(deployment_id, 1), deps)
        note = check_readiness(_check(deployment_id, 1), deps)

    # The retry does not switch again, whatever the replacement worker is doing at that instant (the simulator
    # replaces throttled workers on a config change asynchronously: none, or a new one waiting for capacity).
    assert "switched" not in note
    doc = provisioning.doc(deployment_id)
    assert (doc.gpu.switches, doc.gpu.window) == (1, SECOND_WINDOW)
    assert doc.readiness.check == 1


def test_an_endpoint_deleted_on_runpod_fails_the_deployment_instead_of_retrying(provisioning: Env) -> None:
    from shared.runpod.client import RunpodConnector

    key = provisioning.account()
    provisioning.scenario(start_delay_s=30)
    deployment_id = _provisioned_unwatched(provisioning, key)
    client = RunpodConnector(provisioning.runpod, provisioning.runpod, 10).client(key)
    client.delete_endpoint(
        provisioning.doc(deployment_id).runpod.endpoint_id or ""
    )  # someone deleted it in Runpod's console

    answer = requests.post(
        f"{provisioning.functions}/readiness",
        json={"deployment_id": deployment_id, "check": 1},
        headers={"X-CloudTasks-TaskName": f"readiness-{deployment_id}-1", "X-CloudTasks-TaskRetryCount": "0"},
        timeout=10,
    )

    assert answer.status_code == 204
    doc = provisioning.doc(deployment_id)
    assert (doc.status, doc.error.code) == (Status.FAILED.value, "runpod_resource_missing")
    assert _nothing_left(provisioning, key)()


def test_a_check_whose_next_check_failed_to_schedule_schedules_it_on_retry(provisioning: Env) -> None:
    from shared.deployments.readiness import check_readiness
    from shared.errors import RetryableError
    from shared.tasks import TaskScheduler
    from shared.wiring import step_deps

    key = provisioning.account()
    provisioning.scenario(start_delay_s=30)
    deployment_id = _provisioned_unwatched(provisioning, key)
    deps = step_deps(_settings())
    names: list[str] = []

    def unavailable(*args: Any, **kwargs: Any) -> bool:
        raise RetryableError("Cloud Tasks is unavailable")

    def recorded(self: TaskScheduler, *args: Any, **kwargs: Any) -> bool:
        names.append(kwargs["name"])
        return True

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TaskScheduler, "schedule", unavailable)
        with pytest.raises(RetryableError):
            check_readiness(_check(deployment_id, 1), deps)
        patch.setattr(TaskScheduler, "schedule", recorded)
        check_readiness(_check(deployment_id, 1), deps)

    # The watch goes on: the retry scheduled check 2 and only then recorded check 1 as done.
    assert names == [f"readiness-{deployment_id}-2"]
    assert provisioning.doc(deployment_id).readiness.check == 1

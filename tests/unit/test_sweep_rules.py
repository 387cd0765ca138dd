"""The sweep's pure decisions: what is due (stuck, TTL, idle), idle clocks, orphans, task names."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.deployments.sweep import Deadlines, due_for, idle_due, is_live, orphaned, provisioning_since, task_name
from shared.document import IdleWatch
from shared.lifecycle import Status
from shared.models import CreateDeploymentRequest
from shared.runpod.client import JobCounts
from tests.unit.factories import T0, deployment

LIMITS = Deadlines(readiness_s=900, deleting_s=1800)
LATER = T0 + timedelta(seconds=901)


def _jobs(**counts: int) -> JobCounts:
    return JobCounts.model_validate(counts)


@pytest.mark.parametrize("status", [Status.VALIDATING, Status.SELECTING_GPU, Status.CREATING_ENDPOINT])
def test_provisioning_past_its_deadline_is_stuck(status: Status) -> None:
    doc = deployment(status=status, phase_timestamps={status: T0})
    assert due_for(doc, LATER, LIMITS) == "timeout"
    assert due_for(doc, T0 + timedelta(seconds=899), LIMITS) is None


def test_the_deadline_counts_from_the_endpoint_and_from_a_restart() -> None:
    created = T0 + timedelta(seconds=300)
    doc = deployment(status=Status.DOWNLOADING_MODEL, phase_timestamps={Status.CREATING_ENDPOINT: created})
    assert provisioning_since(doc) == created
    assert due_for(doc, LATER, LIMITS) is None
    restarted = deployment(status=Status.DOWNLOADING_MODEL, started_at=T0 + timedelta(days=1))
    assert due_for(restarted, T0 + timedelta(days=1, seconds=10), LIMITS) is None
    assert due_for(restarted, T0 + timedelta(days=1, seconds=901), LIMITS) == "timeout"


def test_deleting_past_its_longer_deadline_is_retried() -> None:
    doc = deployment(status=Status.DELETING, phase_timestamps={Status.DELETING: T0})
    assert due_for(doc, LATER, LIMITS) is None
    assert due_for(doc, T0 + timedelta(seconds=1801), LIMITS) == "retry_delete"


@pytest.mark.parametrize("status", [Status.READY, Status.STOPPED, Status.FAILED, Status.DOWNLOADING_MODEL])
def test_an_expired_ttl_deletes_whatever_the_status(status: Status) -> None:
    doc = deployment(status=status, ttl_minutes=10, expires_at=T0 + timedelta(minutes=10))
    assert due_for(doc, T0 + timedelta(minutes=9), LIMITS) in (None, "timeout")
    assert due_for(doc, T0 + timedelta(minutes=10), LIMITS) == "ttl"


@pytest.mark.parametrize("status", [Status.DELETING, Status.DELETED])
def test_ttl_never_applies_to_a_deletion(status: Status) -> None:
    doc = deployment(status=status, expires_at=T0, phase_timestamps={Status.DELETING: LATER})
    assert due_for(doc, LATER, LIMITS) is None


def test_only_ready_deployments_with_an_idle_rule_and_an_endpoint_are_idle_candidates() -> None:
    ready = deployment(status=Status.READY, idle_delete_minutes=30, runpod={"endpoint_id": "ep1"})
    assert due_for(ready, LATER, LIMITS) == "idle"
    assert due_for(deployment(status=Status.READY, runpod={"endpoint_id": "ep1"}), LATER, LIMITS) is None
    stopped = deployment(status=Status.STOPPED, idle_delete_minutes=30, runpod={"endpoint_id": "ep1"})
    assert due_for(stopped, LATER, LIMITS) is None


def test_idle_counts_from_ready_and_restarts_on_a_new_job() -> None:
    doc = deployment(status=Status.READY, idle_delete_minutes=10, phase_timestamps={Status.READY: T0})
    due, watch = idle_due(doc, _jobs(completed=1), T0 + timedelta(minutes=5))
    assert (due, watch) == (False, IdleWatch(jobs_seen=1, active_at=T0))
    doc.idle = watch
    due, watch = idle_due(doc, _jobs(completed=2), T0 + timedelta(minutes=11))
    assert not due
    assert watch.active_at == T0 + timedelta(minutes=11)
    doc.idle = watch
    assert idle_due(doc, _jobs(completed=2), T0 + timedelta(minutes=20))[0] is False
    assert idle_due(doc, _jobs(completed=2), T0 + timedelta(minutes=21))[0] is True


def test_a_queued_or_running_job_is_activity() -> None:
    doc = deployment(
        status=Status.READY,
        idle_delete_minutes=10,
        phase_timestamps={Status.READY: T0},
        idle={"jobs_seen": 3, "active_at": T0},
    )
    assert idle_due(doc, _jobs(completed=2, inProgress=1), T0 + timedelta(minutes=30))[0] is False
    assert idle_due(doc, _jobs(completed=3), T0 + timedelta(minutes=30))[0] is True


def test_a_new_ready_restarts_the_idle_clock() -> None:
    restarted = T0 + timedelta(hours=2)
    doc = deployment(
        status=Status.READY,
        idle_delete_minutes=10,
        phase_timestamps={Status.READY: restarted},
        idle={"jobs_seen": 1, "active_at": T0},
    )
    assert idle_due(doc, _jobs(completed=1), restarted + timedelta(minutes=5))[0] is False


def test_orphans_are_our_names_of_deployments_that_are_not_live() -> None:
    dep = "a" * 32
    assert orphaned(f"visgate-{dep}", lambda _: False) == dep
    assert orphaned(f"visgate-{dep}-fb", lambda _: False) == dep
    assert orphaned(f"visgate-{dep}", lambda _: True) is None
    assert orphaned("someone-elses-endpoint", lambda _: False) is None
    assert orphaned("visgate-short", lambda _: False) is None


def test_liveness() -> None:
    assert not is_live(None)
    assert not is_live(deployment(status=Status.DELETED))
    assert not is_live(deployment(status=Status.FAILED, runpod={"torn_down_at": T0}))
    assert is_live(deployment(status=Status.FAILED))
    assert is_live(deployment(status=Status.DELETING))
    assert is_live(deployment(status=Status.STOPPED))


def test_task_names_are_deterministic_per_minute_and_valid() -> None:
    name = task_name("retry_delete", "b" * 32, T0)
    assert name == task_name("retry_delete", "b" * 32, T0 + timedelta(seconds=59))
    assert name != task_name("retry_delete", "b" * 32, T0 + timedelta(seconds=60))
    assert name.replace("-", "").isalnum()


def test_ttl_and_idle_minimum_comes_from_the_setting() -> None:
    with pytest.raises(ValueError, match="at least 10"):
        CreateDeploymentRequest.model_validate({"hf_model_id": "a/b", "ttl_minutes": 5})
    with pytest.raises(ValueError, match="idle_delete_minutes must be at least 3"):
        CreateDeploymentRequest.model_validate(
            {"hf_model_id": "a/b", "idle_delete_minutes": 2}, context={"ttl_min_minutes": 3}
        )
    body = CreateDeploymentRequest.model_validate(
        {"hf_model_id": "a/b", "ttl_minutes": 1, "idle_delete_minutes": 1}, context={"ttl_min_minutes": 1}
    )
    assert (body.ttl_minutes, body.idle_delete_minutes) == (1, 1)


def test_the_local_scheduler_takes_the_sweep_interval_from_its_setting() -> None:
    from local.scheduler import local_schedules
    from shared.config import SchedulerSettings
    from shared.topology import SCHEDULES, function

    (sweep,) = [s for s in SCHEDULES if s.name == "sweep"]
    assert (sweep.cron, sweep.path_suffix, function(sweep.function).signature) == ("*/5 * * * *", "/run", "http")
    assert SchedulerSettings.model_fields["sweep_interval_s"].default == 60  # the environment may set another
    assert [s.interval_s for s in local_schedules([sweep], SchedulerSettings(sweep_interval_s=10))] == [10]

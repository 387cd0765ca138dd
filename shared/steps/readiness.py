"""readiness: the watchdog of a provisioning deployment whose worker has gone silent (Cloud Tasks, delayed).

Each check reads the endpoint's ``/health`` only when the worker reported nothing since the previous check:

- workers THROTTLED (no GPU free in the endpoint's pools) for longer than ``THROTTLED_SWITCH_AFTER_S`` → the
  endpoint is switched to the next candidate pools (a full-replace ``saveEndpoint``), or fails ``no_capacity``
  when none are left;
- only UNHEALTHY workers (crashed at start, never reported) → fails;
- past ``READINESS_DEADLINE_S`` → fails ``timeout``;
- otherwise the next check is scheduled with backoff (the task name carries the check number, so a repeated
  task, or a second chain started by a redelivered provision, is recognised and dropped).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from shared.envelopes import TaskDelivery
from shared.errors import PermanentError
from shared.lifecycle import FailureReason, Status
from shared.messages import LifecycleEvent, ReadinessCheck
from shared.runpod.client import Health, RunpodClient
from shared.steps.deps import StepDeps
from shared.steps.provision import endpoint_spec, schedule_readiness
from shared.steps.teardown import release, runpod_key
from shared.store import utcnow
from shared.topology import TOPIC_DEPLOYMENT_EVENTS

logger = logging.getLogger(__name__)

_WATCHED = {Status.CREATING_ENDPOINT, Status.DOWNLOADING_MODEL, Status.LOADING_MODEL}


def check_readiness(delivery: TaskDelivery[ReadinessCheck], deps: StepDeps) -> str:
    """One look at a provisioning deployment; returns what happened, for the log.

    Raises:
        PermanentError: fail with ``reason`` (timeout, no_capacity, a crashed worker).
        RetryableError: Cloud Tasks retries this check.
    """
    check = delivery.message.check
    deployment_id = delivery.message.deployment_id
    doc = deps.store.get(deployment_id)
    if doc is None:
        return "no such deployment"
    status = Status(doc["status"])
    if status is Status.FAILED and not doc.get("torn_down_at"):
        release(deps, deployment_id, endpoint_id=doc.get("endpoint_id"))
        return "failed: teardown finished"
    if status not in _WATCHED:
        return f"nothing to watch ({status.value})"
    watch = doc.get("readiness") or {}
    if check <= int(watch.get("check", -1)):
        return f"check {check} done already"
    now = utcnow()
    started: datetime = (doc.get("phase_timestamps") or {}).get(Status.CREATING_ENDPOINT.value) or doc["created_at"]
    waited = (now - started).total_seconds()
    if waited > deps.settings.readiness_deadline_s:
        raise PermanentError(
            FailureReason.TIMEOUT.value,
            f"not ready {deps.settings.readiness_deadline_s / 60:.0f} min after the endpoint was created",
        )
    last_report: datetime | None = doc.get("worker_last_report_at")
    last_check: datetime | None = watch.get("last_check_at")
    silent = last_report is None or (last_check is not None and last_report <= last_check)
    throttled_since = watch.get("throttled_since")
    note = "the worker is reporting"
    if silent and doc.get("endpoint_id"):
        key = runpod_key(deps, deployment_id)
        if key is None:
            return "credentials erased (deleted meanwhile)"
        client = deps.runpod.client(key)
        health = client.health(doc["endpoint_id"])
        throttled_since, note = _judge(
            deps, doc=doc, client=client, health=health, throttled_since=throttled_since, now=now
        )
    _next_check(deps, doc=doc, check=check, now=now, throttled_since=throttled_since, waited=waited)
    return note


def _judge(
    deps: StepDeps,
    *,
    doc: dict[str, Any],
    client: RunpodClient,
    health: Health,
    throttled_since: datetime | None,
    now: datetime,
) -> tuple[datetime | None, str]:
    """What the health says; returns the new ``throttled_since`` and a note."""
    workers = health.workers
    if workers.up:
        return None, f"{workers.up} worker(s) starting or up"
    if workers.unhealthy:
        reason = (
            FailureReason.MODEL_LOAD_FAILED if doc.get("worker_last_report_at") else FailureReason.IMAGE_PULL_FAILED
        )
        raise PermanentError(
            reason.value, "the worker exited without reporting ready (crashed at start-up; see the endpoint's logs)"
        )
    if not workers.throttled:
        return None, "no worker yet"
    since = throttled_since or now
    if (now - since).total_seconds() < deps.settings.throttled_switch_after_s:
        return since, f"{workers.throttled} worker(s) throttled: waiting for capacity"
    _switch_pools(deps, doc, client, since, now)
    return None, "switched to the next GPU pools"


def _switch_pools(deps: StepDeps, doc: dict[str, Any], client: RunpodClient, since: datetime, now: datetime) -> None:
    current: list[str] = list(doc.get("gpu_candidates") or [])
    ranked: list[str] = list(doc.get("gpu_ranked") or current)
    tried = ranked.index(current[-1]) + 1 if current and current[-1] in ranked else len(ranked)
    remaining = ranked[tried:]
    waited = (now - since).total_seconds()
    if not remaining:
        raise PermanentError(
            FailureReason.NO_CAPACITY.value,
            f"no GPU capacity in any fitting pool ({', '.join(ranked)}) for {waited:.0f} s",
        )
    window = remaining[: deps.settings.max_gpu_candidates]
    spec = endpoint_spec(deps.settings, doc, doc["template_id"], window)
    client.save_endpoint(spec, doc["endpoint_id"])
    deployment_id = doc["deployment_id"]
    message = (
        f"no GPU capacity in {', '.join(current)} for {waited:.0f} s; switched the endpoint to {', '.join(window)}"
    )
    switches = int(doc.get("gpu_switches", 0)) + 1
    logger.warning(message)
    # The event before the document: if either fails, the retried check finds the document unchanged and repeats
    # the same switch (same pools, same event id), instead of losing the event or skipping a window.
    event = LifecycleEvent(
        event_id=f"{deployment_id}:gpu_switch:{switches}",
        deployment_id=deployment_id,
        owner=doc["owner"],
        status=doc["status"],
        time=now,
        detail={"gpu_switch": {"from": current, "to": window, "throttled_s": round(waited, 1)}},
    )
    deps.publisher.publish(
        TOPIC_DEPLOYMENT_EVENTS, event, deployment_id=deployment_id, status=doc["status"], event_id=event.event_id
    )
    # The new pools get their own full wait: the throttled clock restarts in the same write as the switch, so a
    # retry after this write (the next check failed to record itself, say) cannot switch again at once.
    fields = {
        "gpu_candidates": window,
        "gpu_pool": None,
        "gpu_switches": switches,
        "readiness.throttled_since": None,
    }
    deps.store.update_if_status(deployment_id, _WATCHED, fields, message=message)


def _next_check(
    deps: StepDeps, *, doc: dict[str, Any], check: int, now: datetime, throttled_since: datetime | None, waited: float
) -> None:
    settings = deps.settings
    delay = min(
        settings.readiness_first_check_s * settings.readiness_backoff_factor ** (check + 1),
        settings.readiness_max_interval_s,
    )
    # Never sleep past the deadline: the check that lands there fails the deployment with ``timeout``.
    delay = max(0.0, min(delay, settings.readiness_deadline_s - waited + 1.0))
    # The next check is scheduled before this one is recorded as done: a retry after a failed record repeats this
    # check (the task name dedupes the schedule), whereas the other order would end the watch at "done already".
    # A next check that finds the deployment out of provisioning ends there.
    schedule_readiness(deps, doc["deployment_id"], check + 1, delay)
    watch = {"check": check, "last_check_at": now, "throttled_since": throttled_since}
    deps.store.update_if_status(doc["deployment_id"], _WATCHED, {"readiness": watch})

"""readiness: the watchdog of a provisioning deployment whose worker has gone silent (Cloud Tasks, delayed).

Each check reads the endpoint's workers (``GET /v2/serverless/{id}/workers``) only when the worker reported nothing
since the previous check, and :func:`judge` (pure) decides:

- workers THROTTLED (no GPU free in the endpoint's pools) for longer than ``THROTTLED_SWITCH_AFTER_S`` → the
  endpoint's ``gpu.pools`` is switched to the next window (:func:`next_window`, a PATCH), or the deployment fails
  ``no_capacity`` when none is left;
- only UNHEALTHY workers → fails at once: ``model_load_failed`` when the worker had reported (it got as far as
  loading), else ``image_pull_failed`` (it never started far enough to report);
- past ``READINESS_DEADLINE_S`` (workers INITIALIZING for ever, or none) → fails ``timeout``;
- otherwise the next check is scheduled with backoff (:func:`next_check_delay`; the task name carries the check
  number, so a repeated task, or a second chain started by a redelivered provision, is recognised and dropped).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from shared.config import Settings
from shared.deployments.deps import StepDeps
from shared.deployments.events import GpuSwitch
from shared.deployments.teardown import release
from shared.document import Deployment
from shared.envelopes import TaskDelivery
from shared.errors import PermanentError
from shared.lifecycle import FailureReason, Status
from shared.messages import ReadinessCheck
from shared.runpod.client import EndpointChange, EndpointWorkers, GpuSelection, RunpodClient
from shared.store import utcnow
from shared.tasks import TaskScheduler
from shared.topology import QUEUE_READINESS, function

logger = logging.getLogger(__name__)

_WATCHED = {Status.CREATING_ENDPOINT, Status.DOWNLOADING_MODEL, Status.LOADING_MODEL}


class Action(StrEnum):
    WAIT = "wait"
    SWITCH_POOLS = "switch_pools"
    FAIL = "fail"


@dataclass(frozen=True)
class Verdict:
    action: Action
    note: str
    throttled_since: datetime | None = None
    reason: FailureReason | None = None


def judge(
    workers: EndpointWorkers, *, reported: bool, throttled_since: datetime | None, now: datetime, switch_after_s: float
) -> Verdict:
    """What the endpoint's workers say about a silent worker (pure)."""
    summary = workers.summary
    up = summary.running + summary.idle + summary.initializing
    if up:
        return Verdict(Action.WAIT, f"{up} worker(s) starting or up")
    if summary.unhealthy:
        reason = FailureReason.MODEL_LOAD_FAILED if reported else FailureReason.IMAGE_PULL_FAILED
        return Verdict(
            Action.FAIL,
            "the worker exited without reporting ready (crashed at start-up; see the endpoint's logs)",
            reason=reason,
        )
    if not summary.throttled:
        return Verdict(Action.WAIT, "no worker yet")
    since = throttled_since or now
    if (now - since).total_seconds() < switch_after_s:
        return Verdict(Action.WAIT, f"{summary.throttled} worker(s) throttled: waiting for capacity", since)
    return Verdict(Action.SWITCH_POOLS, "throttled too long: switching pools", since)


def next_window(ranked: list[str], window: list[str], size: int) -> list[str]:
    """The pools after the current window in the ranking (pure); empty when every fitting pool was tried."""
    tried = ranked.index(window[-1]) + 1 if window and window[-1] in ranked else len(ranked)
    return ranked[tried : tried + size]


def next_check_delay(settings: Settings, check: int, waited_s: float) -> float:
    """Seconds until the check after ``check`` (pure): backoff up to the longest interval, never past the deadline
    (the check that lands there fails the deployment with ``timeout``)."""
    delay = min(
        settings.readiness_first_check_s * settings.readiness_backoff_factor ** (check + 1),
        settings.readiness_max_interval_s,
    )
    return max(0.0, min(delay, settings.readiness_deadline_s - waited_s + 1.0))


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
    if doc.status is Status.FAILED and doc.runpod.torn_down_at is None and doc.may_exist_on_runpod():
        release(deps, deployment_id, endpoint_id=doc.runpod.endpoint_id)
        return "failed: teardown finished"
    if doc.status not in _WATCHED:
        return f"nothing to watch ({doc.status.value})"
    if delivery.message.generation != doc.readiness.generation or check <= doc.readiness.check:
        return f"check {check} (start {delivery.message.generation}) done already, or of an earlier start's watch"
    now = utcnow()
    # A start of a stopped deployment gets the whole deadline again, from the start.
    started = doc.started_at or doc.phase_timestamps.get(Status.CREATING_ENDPOINT) or doc.created_at
    waited = (now - started).total_seconds()
    if waited > deps.settings.readiness_deadline_s:
        raise PermanentError(
            FailureReason.TIMEOUT.value,
            f"not ready {deps.settings.readiness_deadline_s / 60:.0f} min after the endpoint was created",
        )
    last_report, last_check = doc.worker_last_report_at, doc.readiness.last_check_at
    silent = last_report is None or (last_check is not None and last_report <= last_check)
    throttled_since = doc.readiness.throttled_since
    note = "the worker is reporting"
    if silent and doc.runpod.endpoint_id:
        credentials = deps.credentials(deployment_id)
        if credentials is None:
            return "credentials erased (deleted meanwhile)"
        client = deps.runpod.client(credentials.runpod_api_key)
        verdict = judge(
            client.endpoint_workers(doc.runpod.endpoint_id),
            reported=last_report is not None,
            throttled_since=throttled_since,
            now=now,
            switch_after_s=deps.settings.throttled_switch_after_s,
        )
        if verdict.action is Action.FAIL:
            assert verdict.reason is not None
            raise PermanentError(verdict.reason.value, verdict.note)
        throttled_since, note = verdict.throttled_since, verdict.note
        if verdict.action is Action.SWITCH_POOLS:
            assert throttled_since is not None
            _switch_pools(deps, doc, client, throttled_since, now)
            throttled_since, note = None, "switched to the next GPU pools"
    # The next check is scheduled before this one is recorded as done: a retry after a failed record repeats this
    # check (the task name dedupes the schedule), whereas the other order would end the watch at "done already".
    # A next check that finds the deployment out of provisioning ends there.
    schedule_readiness(
        deps, deployment_id, check + 1, next_check_delay(deps.settings, check, waited), doc.readiness.generation
    )

    def record_check(d: Deployment) -> bool:
        if d.status not in _WATCHED:
            return False
        d.readiness.check, d.readiness.last_check_at, d.readiness.throttled_since = check, now, throttled_since
        return True

    deps.store.update(deployment_id, record_check)
    return note


def _switch_pools(deps: StepDeps, doc: Deployment, client: RunpodClient, since: datetime, now: datetime) -> None:
    current = doc.gpu.window
    window = next_window(doc.gpu.ranked or current, current, deps.settings.max_gpu_candidates)
    waited = (now - since).total_seconds()
    if not window:
        raise PermanentError(
            FailureReason.NO_CAPACITY.value,
            f"no GPU capacity in any fitting pool ({', '.join(doc.gpu.ranked or current)}) for {waited:.0f} s",
        )
    assert doc.runpod.endpoint_id is not None
    # PATCH sends only gpu.pools; it clears excludedTypes, which we never set.
    client.update_endpoint(doc.runpod.endpoint_id, EndpointChange(gpu=GpuSelection(pools=window)))
    message = (
        f"no GPU capacity in {', '.join(current)} for {waited:.0f} s; switched the endpoint to {', '.join(window)}"
    )
    switches = doc.gpu.switches + 1
    logger.warning(message)
    # The event before the document: if either fails, the retried check finds the document unchanged and repeats
    # the same switch (same pools, same event id), instead of losing the event or skipping a window.
    detail = GpuSwitch(from_pools=current, to=window, throttled_s=round(waited, 1))
    deps.transitions.announce_gpu_switch(doc, switches, now, detail)

    # The new pools get their own full wait: the throttled clock restarts in the same write as the switch, so a
    # retry after this write (the next check failed to record itself, say) cannot switch again at once.
    def record_switch(d: Deployment) -> bool:
        if d.status not in _WATCHED:
            return False
        d.gpu.window, d.gpu.pool_in_use, d.gpu.switches = window, None, switches
        d.readiness.throttled_since = None
        return True

    deps.store.update(doc.deployment_id, record_switch, message=message)


def schedule_readiness(deps: StepDeps, deployment_id: str, check: int, delay_s: float, generation: int = 0) -> None:
    """The watchdog's next look."""
    schedule_readiness_check(
        deps.tasks, ReadinessCheck(deployment_id=deployment_id, check=check, generation=generation), delay_s
    )


def schedule_readiness_check(tasks: TaskScheduler, check: ReadinessCheck, delay_s: float) -> None:
    """One look of the watchdog; the task name carries the start and the check number, so a repeat is
    deduplicated and a later start's watch never collides with an earlier one's names."""
    start = f"s{check.generation}-" if check.generation else ""
    name = f"readiness-{check.deployment_id}-{start}{check.check}"
    tasks.schedule(QUEUE_READINESS, function("readiness").path, check, name=name, delay_s=delay_s)

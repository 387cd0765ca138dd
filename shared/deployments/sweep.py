"""The sweep: what Cloud Scheduler runs every few minutes, so that nothing bills after it is needed.

One run (:func:`run_sweep`) only finds and fans out: bounded, indexed queries (status + a deadline field, see
``firestore.indexes.json``) select the candidates, :func:`due_for` (pure) decides, and each due deployment becomes
one task on the ``sweep`` queue (:class:`SweepItem`; the task name carries the run's minute, so two runs in one minute
do not double it in production). Each task (:func:`handle_item`) decides again from the document as it is then, so a
deployment that moved meanwhile is left alone, and a task that runs twice finds nothing left to do.

- **stuck**: provisioning past ``READINESS_DEADLINE_S`` → ``failed`` (``timeout``) and torn down; ``deleting`` past
  ``DELETING_DEADLINE_S`` → the delete is run again, and the log says so;
- **ttl**: ``ttl_minutes`` since ``created_at`` passed (``expires_at``) → the delete flow, reason ``ttl``;
- **idle**: a ``ready`` deployment with ``idle_delete_minutes`` whose endpoint counted no new job for that long
  (Runpod's ``/health`` job counters) → the delete flow, reason ``idle``;
- **orphans**: for each tenant whose key we still hold, endpoints named ``visgate-<id>`` of no live deployment are
  deleted, and recorded in the log (and on the deployment, when we know it);
- **purge**: expired idempotency records, rate-limit windows and key verdicts (TTL policies do it in production).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from shared.config import Settings
from shared.deployments.cleanup import cleanup
from shared.deployments.credentials import CredentialsUnreadableError
from shared.deployments.deps import StepDeps
from shared.deployments.teardown import fail_deployment
from shared.document import Deployment, IdleWatch
from shared.envelopes import TaskDelivery
from shared.errors import DeploymentNotFoundError, IllegalTransitionError
from shared.lifecycle import PROVISIONING, FailureReason, Status
from shared.messages import DeploymentDeleteRequested, SweepItem
from shared.models import DeleteReason
from shared.runpod.client import JobCounts
from shared.runpod.errors import RunpodAuthError, RunpodNotFoundError
from shared.server_records import KEY_VERDICTS, RATE_LIMITS, SEEN_REPORTS
from shared.store import IDEMPOTENCY, utcnow
from shared.topology import QUEUE_SWEEP, TOPIC_DEPLOYMENT_DELETE_REQUESTED, function

logger = logging.getLogger(__name__)

Action = Literal["timeout", "retry_delete", "ttl", "idle", "orphans"]
_ENDPOINT_NAME = re.compile(r"^visgate-(?P<id>[0-9a-f]{32})(?:-fb)?$")
_EXPIRABLE = frozenset(Status) - {Status.DELETING, Status.DELETED}
_FANOUT_THREADS = 16
PURGED = (IDEMPOTENCY, RATE_LIMITS, KEY_VERDICTS, SEEN_REPORTS)


@dataclass(frozen=True)
class Deadlines:
    readiness_s: float
    deleting_s: float

    @classmethod
    def of(cls, settings: Settings) -> Deadlines:
        return cls(settings.readiness_deadline_s, settings.deleting_deadline_s)


# --- pure decisions -------------------------------------------------------------------------------------------------


def provisioning_since(doc: Deployment) -> datetime:
    """When the current provisioning attempt began: the endpoint's creation, or the last start after a stop."""
    marks = [doc.created_at, doc.phase_timestamps.get(Status.CREATING_ENDPOINT), doc.started_at]
    return max(mark for mark in marks if mark is not None)


def due_for(doc: Deployment, now: datetime, deadlines: Deadlines) -> Action | None:
    """What the sweep must do with ``doc`` now, if anything (pure). Idle needs Runpod's counters: it is only a
    candidate here (:func:`idle_due` decides)."""
    if doc.status in _EXPIRABLE and doc.expires_at is not None and doc.expires_at <= now:
        return "ttl"  # the delete tears down whatever state it is in, stuck or not
    if doc.status in PROVISIONING and (now - provisioning_since(doc)).total_seconds() > deadlines.readiness_s:
        return "timeout"
    deleting_since = doc.phase_timestamps.get(Status.DELETING)
    if (
        doc.status is Status.DELETING
        and deleting_since
        and (now - deleting_since).total_seconds() > deadlines.deleting_s
    ):
        return "retry_delete"
    if doc.status is Status.READY and doc.idle_delete_minutes and doc.runpod.endpoint_id:
        return "idle"
    return None


def idle_due(doc: Deployment, jobs: JobCounts, now: datetime) -> tuple[bool, IdleWatch]:
    """Whether the endpoint counted no new job for ``idle_delete_minutes``, and the watch to record (pure).

    The clock starts at ``ready`` (the warm-up was the last job) and restarts whenever the job count changes or a
    job is queued or running.
    """
    assert doc.idle_delete_minutes
    ready_at = doc.phase_timestamps.get(Status.READY) or now
    watch = doc.idle
    active_at = max(watch.active_at or ready_at, ready_at)
    if watch.jobs_seen is not None and (jobs.total != watch.jobs_seen or jobs.in_progress or jobs.in_queue):
        active_at = now
    fresh = IdleWatch(jobs_seen=jobs.total, active_at=active_at)
    return now - active_at >= timedelta(minutes=doc.idle_delete_minutes), fresh


def orphaned(endpoint_name: str, live: Callable[[str], bool]) -> str | None:
    """The deployment id of an endpoint of ours that belongs to no live deployment (pure, given ``live``)."""
    match = _ENDPOINT_NAME.fullmatch(endpoint_name)
    if match is None or live(match["id"]):
        return None
    return match["id"]


def is_live(doc: Deployment | None) -> bool:
    """Whether a deployment may still own its endpoint: anything not deleted, and not failed with its teardown
    done. A ``deleting`` one is cleanup's to finish."""
    if doc is None or doc.status is Status.DELETED:
        return False
    return not (doc.status is Status.FAILED and doc.runpod.torn_down_at is not None)


def task_name(action: Action, subject: str, run_at: datetime) -> str:
    """Deterministic per run minute: Cloud Tasks refuses a second task of that name, so runs do not double work."""
    digest = hashlib.sha256(subject.encode()).hexdigest()[:32]
    return f"sweep-{action.replace('_', '-')}-{digest}-{int(run_at.timestamp()) // 60}"


# --- the scheduled run ---------------------------------------------------------------------------------------------


@dataclass
class SweepReport:
    run_at: datetime
    fanned_out: Counter[str] = field(default_factory=Counter)
    purged: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def describe(self) -> str:
        due = ", ".join(f"{k} {v}" for k, v in sorted(self.fanned_out.items())) or "nothing due"
        purged = sum(self.purged.values())
        return f"sweep: {due}; purged {purged} expired records; {self.seconds:.2f} s"


Fanout = Callable[[list[SweepItem]], None]


def candidates(deps: StepDeps, now: datetime) -> Iterable[Deployment]:
    """Every deployment a sweep at ``now`` must look at, from indexed queries (each one bounded by a deadline)."""
    store, settings, page = deps.store, deps.settings, deps.settings.sweep_batch_size
    provisioning_cutoff = now - timedelta(seconds=settings.readiness_deadline_s)
    yield from store.sweep_candidates(sorted(PROVISIONING), "created_at", provisioning_cutoff, page)
    deleting_cutoff = now - timedelta(seconds=settings.deleting_deadline_s)
    yield from store.sweep_candidates([Status.DELETING], "phase_timestamps.deleting", deleting_cutoff, page)
    yield from store.sweep_candidates(sorted(_EXPIRABLE), "expires_at", now + timedelta(microseconds=1), page)
    yield from store.sweep_candidates([Status.READY], "idle_delete_minutes", 10**9, page)


def run_sweep(deps: StepDeps, now: datetime | None = None, fanout: Fanout | None = None) -> SweepReport:
    """Find what is due and fan it out, one task per deployment (and one per tenant for orphans); then purge."""
    started = time.monotonic()
    now = now or utcnow()
    report = SweepReport(run_at=now)
    deadlines = Deadlines.of(deps.settings)
    items: dict[tuple[str, str], SweepItem] = {}
    for doc in candidates(deps, now):
        action = due_for(doc, now, deadlines)
        if action is not None:
            items.setdefault((action, doc.deployment_id), _item(doc.deployment_id, action, now))
    for deployment_id in deps.store.tenants_with_credentials().values():
        items[("orphans", deployment_id)] = _item(deployment_id, "orphans", now)
    (fanout or _task_fanout(deps))(list(items.values()))
    report.fanned_out.update(action for action, _ in items)
    purge_before = min(now, utcnow())  # a sweep run for a later time (a test's clock) never purges ahead of time
    for collection in PURGED:
        report.purged[collection] = deps.store.purge_expired(collection, purge_before, deps.settings.sweep_batch_size)
    report.seconds = time.monotonic() - started
    return report


def _item(deployment_id: str, action: Action, now: datetime) -> SweepItem:
    return SweepItem(deployment_id=deployment_id, action=action, run_at=now)


def _task_fanout(deps: StepDeps) -> Fanout:
    path = function("sweep").path

    def enqueue(item: SweepItem) -> None:
        deps.tasks.schedule(QUEUE_SWEEP, path, item, task_name(item.action, item.deployment_id, item.run_at), 0)

    def fanout(items: list[SweepItem]) -> None:
        with ThreadPoolExecutor(_FANOUT_THREADS) as pool:
            list(pool.map(enqueue, items))  # list(): an error raises here, and the scheduler's next run retries

    return fanout


# --- one deployment (a task of the sweep queue) ---------------------------------------------------------------------


def handle_item(delivery: TaskDelivery[SweepItem], deps: StepDeps) -> str:
    """Do what the sweep found due, if it still is. RetryableError while Runpod or Firestore fail."""
    return sweep_one(delivery.message, deps)


def sweep_one(item: SweepItem, deps: StepDeps, now: datetime | None = None) -> str:  # noqa: PLR0911 (one per action)
    now = now or utcnow()
    if item.action == "orphans":
        return remove_orphans(deps, item.deployment_id)
    doc = deps.store.get(item.deployment_id)
    if doc is None:
        return "no such deployment"
    action = due_for(doc, now, Deadlines.of(deps.settings))
    if action != item.action:
        return f"not due any more ({doc.status.value})"
    if action == "timeout":
        minutes = deps.settings.readiness_deadline_s / 60
        fail_deployment(
            deps,
            doc.deployment_id,
            FailureReason.TIMEOUT.value,
            f"not ready {minutes:.0f} min after provisioning began (found by the sweep)",
        )
        return "stuck: failed with timeout and torn down"
    if action == "retry_delete":
        deleting_since = doc.phase_timestamps[Status.DELETING]
        waited = (now - deleting_since).total_seconds() / 60
        deps.store.log(
            doc.deployment_id,
            f"deleting for {waited:.0f} min, longer than its deadline "
            f"({deps.settings.deleting_deadline_s / 60:.0f} min): the sweep retries the delete",
            level="warning",
        )
        request = DeploymentDeleteRequested(
            deployment_id=doc.deployment_id, requested_at=now, reason=doc.delete_reason or "user"
        )
        return f"delete retried: {cleanup(request, deps)}"
    if action == "ttl":
        return request_delete(deps, doc.deployment_id, "ttl", f"TTL of {doc.ttl_minutes} min expired")
    return _check_idle(deps, doc, now)


def request_delete(deps: StepDeps, deployment_id: str, reason: DeleteReason, note: str) -> str:
    """The delete flow (as the owner's DELETE starts it), with ``reason`` on the document and the event."""

    def record(doc: Deployment) -> None:
        doc.delete_reason = doc.delete_reason or reason

    try:
        deps.transitions.move(deployment_id, Status.DELETING, f"{note}: deleting ({reason})", apply=record)
    except (IllegalTransitionError, DeploymentNotFoundError):
        return "deleted meanwhile"
    deps.publisher.publish(
        TOPIC_DEPLOYMENT_DELETE_REQUESTED,
        DeploymentDeleteRequested(deployment_id=deployment_id, requested_at=utcnow(), reason=reason),
        deployment_id=deployment_id,
    )
    return f"delete requested ({reason})"


def _check_idle(deps: StepDeps, doc: Deployment, now: datetime) -> str:
    credentials = deps.credentials(doc.deployment_id)
    if credentials is None or doc.runpod.endpoint_id is None:
        return "credentials erased (deleted meanwhile)"
    jobs = deps.runpod.client(credentials.runpod_api_key).health(doc.runpod.endpoint_id).jobs
    due, watch = idle_due(doc, jobs, now)
    if due:
        return request_delete(deps, doc.deployment_id, "idle", f"no inference job for {doc.idle_delete_minutes} min")

    def record(d: Deployment) -> bool:
        if d.status is not Status.READY or d.idle == watch:
            return False
        d.idle = watch
        return True

    deps.store.update(doc.deployment_id, record)
    return f"active (last job seen {watch.active_at})"


def remove_orphans(deps: StepDeps, deployment_id: str) -> str:
    """Delete the endpoints of the tenant's account (reached with ``deployment_id``'s key) that are named for a
    deployment that is not live; each is logged, and noted on that deployment when we know it."""
    try:
        credentials = deps.credentials(deployment_id)
    except CredentialsUnreadableError:
        return "credentials do not open: this tenant's account is not swept"
    if credentials is None:
        return "credentials erased meanwhile"
    client = deps.runpod.client(credentials.runpod_api_key)
    try:
        endpoints = client.list_endpoints()
    except RunpodAuthError:
        return "Runpod refuses the tenant's key: nothing to sweep"
    known: dict[str, Deployment | None] = {}

    def live(other: str) -> bool:
        if other not in known:
            known[other] = deps.store.get(other)
        return is_live(known[other])

    removed = []
    for endpoint in endpoints:
        other = orphaned(endpoint.name, live)
        if other is None:
            continue
        with contextlib.suppress(RunpodNotFoundError):
            client.delete_endpoint(endpoint.id)
        removed.append(endpoint.id)
        logger.warning("removed orphaned Runpod endpoint %s (%s)", endpoint.id, endpoint.name)
        if known.get(other) is not None:
            with contextlib.suppress(DeploymentNotFoundError):
                deps.store.log(
                    other, f"the sweep removed an orphaned Runpod endpoint {endpoint.id} ({endpoint.name})", "warning"
                )
    return f"orphans removed: {', '.join(removed)}" if removed else "no orphans"

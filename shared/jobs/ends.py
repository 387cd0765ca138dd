"""What follows an inference job's end, whoever sees it: its usage, its webhook, and the checks while it runs.

- A job's end is seen by whichever comes first: the runsync answer, a GET or cancel through the API, or a check of
  the jobs function (Cloud Tasks ``job-watch``). Every job whose answer did not see it end is followed by those
  checks on ``JOB_WATCH_SCHEDULE_S`` (the last delay repeats, for up to ``JOB_WATCH_MAX_S``), so usage and the job
  webhook never wait for the user to poll. Every job also names the callback function as Runpod's per-job
  ``webhook``: Runpod's call on the job's end (unsigned, so it is only a nudge, authenticated by a token in its URL)
  schedules a check at once. The record's move to a final state is counted once (shared.jobs.records).
- A job with a ``webhook_url`` gets one delivery when it ends (:meth:`JobEnds.announce`): created if absent under an
  id derived from the job, so two observers of one end make one delivery, then sent by the webhooks function on the
  ``webhook-delivery`` queue with the tenant's Standard Webhooks secret, the same retries and the same delivery log
  as deployment webhooks. A body over ``JOB_WEBHOOK_MAX_BYTES`` (inline images) leaves ``output`` out and says so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.config import Settings, delays_s
from shared.deployments.budget import BudgetGuard
from shared.document import Deployment
from shared.errors import PermanentError, RetryableError
from shared.gpu import STATIC_POOLS, GpuCatalog, GpuPool
from shared.jobs.records import JobPricing, JobRecord, JobStore, JobView
from shared.messages import JobCheck
from shared.runpod.client import Job, RunpodClient
from shared.tasks import TaskScheduler
from shared.topology import QUEUE_JOB_WATCH, function
from shared.webhooks.records import DeliveryRecords, DeliveryState, delivery_id_for, webhook_id_for
from shared.webhooks.steps import schedule_attempt

logger = logging.getLogger(__name__)

WATCH_PATH = f"{function('job-watch').path}/watch"
# Runpod's final job states and the type of the webhook each one sends.
EVENT_TYPES = {
    "COMPLETED": "job.completed",
    "FAILED": "job.failed",
    "TIMED_OUT": "job.timed_out",
    "CANCELLED": "job.cancelled",
}


def watch_delay(check: int, schedule: list[float]) -> float:
    """The delay before check ``check`` (0-based) of a running job: the schedule's, then its last one repeated."""
    return schedule[min(check, len(schedule) - 1)]


def job_event_id(record: JobRecord) -> str:
    """The one end of one job (a job ends once: its delivery, and its webhook-id, derive from this)."""
    return f"job:{record.deployment_id}:{record.job_id}"


def webhook_body(record: JobRecord, output: Any, max_bytes: int) -> bytes:
    """The delivery body: ``{"type": "job.<state>", "timestamp", "data": <the job as the API shows it, output>}``.

    Over ``max_bytes`` (a Firestore record holds the body; inline images can be megabytes) the output is left out
    and ``data.output_omitted`` says so: an output bucket (``output_s3_url``) keeps outputs small.
    """
    finished = record.finished_at or record.created_at
    payload: dict[str, Any] = {
        "type": EVENT_TYPES.get(record.status, "job.failed"),
        "timestamp": finished.isoformat().replace("+00:00", "Z"),
        "data": JobView.of(record, output).model_dump(mode="json"),
    }
    body = json.dumps(payload, separators=(",", ":")).encode()
    if len(body) <= max_bytes:
        return body
    payload["data"] |= {"output": None, "output_omitted": True}
    return json.dumps(payload, separators=(",", ":")).encode()


@dataclass(frozen=True)
class JobEnds:
    settings: Settings
    jobs: JobStore
    records: DeliveryRecords
    tasks: TaskScheduler
    catalog: GpuCatalog
    budget: BudgetGuard | None = None  # the budget check (shared.deployments.budget), where a job's end is recorded

    def pricing(self, client: RunpodClient, doc: Deployment) -> JobPricing:
        """The pool the workers run on and its serverless price from Runpod's catalog (cached; the static table
        when the catalog cannot be read)."""
        pool_id = doc.gpu.pool_in_use or (doc.gpu.window[0] if doc.gpu.window else None)
        try:
            pools: tuple[GpuPool, ...] = self.catalog.pools(client.gpu_catalog)
        except PermanentError:
            pools = STATIC_POOLS
        price = next((p.usd_per_second for p in pools if p.id == pool_id), None)
        if price is None:
            price = next((p.usd_per_second for p in STATIC_POOLS if p.id == pool_id), 0.0)
        return JobPricing(pool=pool_id, usd_per_second=price)

    def observe(
        self, client: RunpodClient, doc: Deployment, record: JobRecord, job: Job, *, retry_budget: bool = False
    ) -> JobRecord:
        """Fold what Runpod said into the record (the end counted once), announce an end and check the budget.

        ``retry_budget``: a budget check that failed raises (the job watch's task is retried); else it is logged,
        and the next job end (or the job watch's check) checks again.
        """
        pricing = self.pricing(client, doc) if job.final else JobPricing()
        updated = self.jobs.observe(doc.deployment_id, record.job_id, job, pricing) or record
        if updated.final:
            self.announce(updated, lambda: job.output)
            try:
                self.check_budget(client, doc)
            except RetryableError as exc:
                if retry_budget:
                    raise
                logger.error("job %s: the budget check failed (checked again later): %s", record.job_id, exc)
        return updated

    def check_budget(self, client: RunpodClient, doc: Deployment) -> None:
        """The budget's crossings after a job's end (a deployment without a budget costs no read).

        Raises:
            RetryableError: the stop or the mark failed.
        """
        if self.budget is not None and doc.max_cost_usd is not None:
            self.budget.check(client, doc.deployment_id)

    def after_submit(
        self, record: JobRecord, job: Job, client: RunpodClient | None = None, doc: Deployment | None = None
    ) -> None:
        """Announce a job that ended in its answer (and check the budget), else follow it. Runpod has the job by
        now: a failure here is logged, never the user's answer (the user's own GET still sees the end)."""
        try:
            if record.final:
                self.announce(record, lambda: job.output)
                if client is not None and doc is not None:
                    self.check_budget(client, doc)
            else:
                self.follow(record, 0)
        except RetryableError as exc:
            logger.error("job %s: its end may go unannounced until it is read: %s", record.job_id, exc)

    def announce(self, record: JobRecord, output: Callable[[], Any]) -> str:
        """The job webhook of a final job with a ``webhook_url``: its delivery made once and its first attempt
        scheduled (again, when an earlier try stopped in between: the task name dedupes it)."""
        if not record.final or not record.webhook_url:
            return "no job webhook"
        event_id = job_event_id(record)
        delivery_id = delivery_id_for(event_id)
        existing = self.records.get(delivery_id)
        if existing is None:
            body = webhook_body(record, output(), self.settings.job_webhook_max_bytes)
            created = self.records.create(
                {
                    "delivery_id": delivery_id,
                    "deployment_id": record.deployment_id,
                    "job_id": record.job_id,
                    "owner": record.owner,
                    "event_id": event_id,
                    "event_type": EVENT_TYPES.get(record.status, "job.failed"),
                    "webhook_id": webhook_id_for(event_id),
                    "url": record.webhook_url,
                    "body": body.decode(),
                    "redelivery_of": None,
                }
            )
            existing = None if created else self.records.get(delivery_id)
        if existing is not None and (existing.state is not DeliveryState.PENDING or existing.claimed):
            return f"job webhook {delivery_id} is under way already"
        schedule_attempt(self.tasks, delivery_id, record.deployment_id, 0, 0)
        return f"job webhook {delivery_id} scheduled"

    def follow(self, record: JobRecord, check: int) -> None:
        """Schedule check ``check`` of a job still running."""
        delay = watch_delay(check, delays_s(self.settings.job_watch_schedule_s))
        message = JobCheck(deployment_id=record.deployment_id, job_id=record.job_id, check=check)
        schedule_check(self.tasks, message, delay)


def schedule_check(tasks: TaskScheduler, check: JobCheck, delay_s: float) -> None:
    """One named check of a job (a nudge has one name per job: Runpod's retries of its call make no second one)."""
    which = "ended" if check.nudge else str(check.check)
    tasks.schedule(QUEUE_JOB_WATCH, WATCH_PATH, check, f"job-{check.deployment_id}-{check.job_id}-{which}", delay_s)

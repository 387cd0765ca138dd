"""The webhooks function's steps: an event becomes a delivery; a delivery is attempted, recorded and retried.

- :func:`dispatch_event` (Pub/Sub ``deployment-events``): for a deployment with ``user_webhook_url`` and an event
  it asked for (default ``ready``, ``failed``, ``deleted``; ``webhook_events`` picks others; ``budget_warning`` and
  ``budget_exhausted`` always), create the delivery
  record (create-if-absent: a redelivered event makes no second delivery) and schedule its first attempt.
- :func:`deliver` (Cloud Tasks ``webhook-delivery``): claim the attempt, sign (every valid tenant secret), POST
  through the SSRF-pinned sender, record the attempt. 2xx = delivered; 410 = stopped for good; a refused target
  (private address) = failed at once; anything else, timeouts included, schedules the next attempt after the next
  delay of ``WEBHOOK_RETRY_SCHEDULE_S`` (the step schedules it as a new named task: the Cloud Tasks emulator does
  not honour queue retry configs, and the queue's own retries are kept for our crashes); after the last one, failed.
- :func:`redeliver` (the intake API): a fresh delivery of the same event, with the same ``webhook-id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from shared.config import SealingSettings, delays_s
from shared.deployments.events import BUDGET_EXHAUSTED, BUDGET_WARNING, ReceivedEvent
from shared.envelopes import TaskDelivery
from shared.http_safe import RefusedTargetError, Resolver, SendResult, check_target, post, system_resolver
from shared.messages import Message
from shared.signing import HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, signature
from shared.store import DeploymentStore, utcnow
from shared.tasks import TaskScheduler
from shared.topology import QUEUE_WEBHOOK_DELIVERY, function
from shared.webhooks import payload
from shared.webhooks.records import (
    Delivery,
    DeliveryRecords,
    DeliveryState,
    delivery_id_for,
    fresh_delivery_id,
    webhook_id_for,
)
from shared.webhooks.secrets import WebhookSecrets

DELIVER_PATH = f"{function('webhooks').path}/deliver"
# Events every webhook subscriber gets, whatever its webhook_events: its budget running out is never optional.
ALWAYS_DELIVERED = frozenset({BUDGET_WARNING, BUDGET_EXHAUSTED})
# A claimed attempt that never got recorded (the instance died mid-send) may be taken again after this long.
_CLAIM_GRACE_S = 50.0
# What a redelivery copies (job_id only from a job webhook's delivery).
_COPIED = ("deployment_id", "job_id", "owner", "event_id", "event_type", "webhook_id", "url", "body")


class WebhookAttempt(Message):
    """Queue ``webhook-delivery``: attempt ``attempt`` (0-based) of one delivery."""

    delivery_id: str
    deployment_id: str
    attempt: int = 0


@dataclass(frozen=True)
class WebhookDeps:
    settings: SealingSettings
    store: DeploymentStore
    records: DeliveryRecords
    secrets: WebhookSecrets
    tasks: TaskScheduler
    resolver: Resolver = system_resolver


def schedule_attempt(tasks: TaskScheduler, delivery_id: str, deployment_id: str, attempt: int, delay_s: float) -> None:
    """Attempt ``attempt`` (0-based) of a delivery, after ``delay_s`` (one named task per attempt)."""
    message = WebhookAttempt(delivery_id=delivery_id, deployment_id=deployment_id, attempt=attempt)
    tasks.schedule(QUEUE_WEBHOOK_DELIVERY, DELIVER_PATH, message, f"{delivery_id}-{attempt}", delay_s)


def dispatch_event(event: ReceivedEvent, deps: WebhookDeps) -> str:
    """Turn one lifecycle event into (at most) one delivery."""
    target = payload.webhook_target(deps.store, event.subject)
    if target is None:
        return "no webhook for this deployment"
    if event.status not in target.events and event.status not in ALWAYS_DELIVERED:
        return f"{event.status} was not asked for"
    delivery_id = delivery_id_for(event.id)
    record = {
        "delivery_id": delivery_id,
        "deployment_id": target.deployment_id,
        "owner": target.owner,
        "event_id": event.id,
        "event_type": f"deployment.{event.status}",
        "webhook_id": webhook_id_for(event.id),
        "url": target.url,
        "body": payload.body(event, target).decode(),
        "redelivery_of": None,
    }
    if not deps.records.create(record):
        existing = deps.records.get(delivery_id)
        if existing is not None and existing.state is DeliveryState.PENDING and existing.claimed == 0:
            # The first try may have stopped between the record and the task: schedule again (same task name; an
            # attempt already claimed is not sent twice).
            schedule_attempt(deps.tasks, delivery_id, target.deployment_id, 0, 0)
        return f"delivery {delivery_id} exists already (a redelivered event)"
    schedule_attempt(deps.tasks, delivery_id, target.deployment_id, 0, 0)
    return f"delivery {delivery_id} of {event.status} scheduled"


def _claim(deps: WebhookDeps, delivery_id: str, attempt: int) -> tuple[Delivery | None, str]:
    """Take attempt ``attempt``, or say why not (settled, a duplicate task, not due)."""
    for _ in range(4):
        delivery = deps.records.get(delivery_id)
        if delivery is None:
            return None, "no such delivery"
        if delivery.state is not DeliveryState.PENDING:
            return None, f"delivery is {delivery.state.value} already"
        if delivery.claimed > attempt:
            claimed_at = delivery.data.get("claimed_at")
            abandoned = (
                delivery.claimed == attempt + 1
                and len(delivery.attempts) == attempt
                and claimed_at is not None
                and utcnow() - claimed_at > timedelta(seconds=deps.settings.webhook_timeout_s + _CLAIM_GRACE_S)
            )
            if not abandoned:
                return None, f"attempt {attempt} was taken already (a duplicate task)"
        elif delivery.claimed < attempt:
            return None, f"attempt {attempt} is not due"
        if deps.records.claim(delivery, attempt):
            return delivery, ""
    return None, "the delivery kept changing under us"


def _send(deps: WebhookDeps, delivery: Delivery) -> tuple[SendResult, bool]:
    """Sign and POST once; (result, refused) where refused means the target may never be called."""
    data = delivery.data
    body = str(data["body"]).encode()
    now = utcnow()
    timestamp = int(now.timestamp())
    secrets = deps.secrets.get_or_create(str(data["owner"])).signing_secrets(now)
    headers = {
        HEADER_ID: str(data["webhook_id"]),
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: " ".join(signature(s, str(data["webhook_id"]), timestamp, body) for s in secrets),
    }
    try:
        target = check_target(
            str(data["url"]), allow_http_loopback=deps.settings.allow_http_loopback_webhooks, resolver=deps.resolver
        )
    except RefusedTargetError as exc:
        return SendResult(None, 0, f"refused: {exc}"), True
    return post(target, body, headers, deps.settings.webhook_timeout_s), False


def deliver(task: TaskDelivery[WebhookAttempt], deps: WebhookDeps) -> str:
    """Run one attempt of one delivery and record it; schedule the next when it failed and attempts remain."""
    message = task.message
    n = message.attempt
    delivery, why_not = _claim(deps, message.delivery_id, n)
    if delivery is None:
        return why_not
    started = utcnow()
    try:
        result, refused = _send(deps, delivery)
    except Exception:
        # Nothing was sent (the secret could not be read, say): the queue's retry of this task may take it again.
        deps.records.release(message.delivery_id, n)
        raise
    delays = delays_s(deps.settings.webhook_retry_schedule_s)  # before the second, third, ... attempt
    code = result.status_code
    if refused:
        state = DeliveryState.FAILED
    elif code is not None and 200 <= code < 300:
        state = DeliveryState.DELIVERED
    elif code == 410:
        state = DeliveryState.STOPPED
    elif n < len(delays):
        # Scheduled before the attempt is recorded: a retry after a failed record finds this attempt claimed, and
        # the next one comes anyway (the task name dedupes the schedule).
        schedule_attempt(deps.tasks, message.delivery_id, message.deployment_id, n + 1, delays[n])
        state = DeliveryState.PENDING
    else:
        state = DeliveryState.FAILED
    error = result.error
    if error is None and state is not DeliveryState.DELIVERED:
        error = f"HTTP {code}"
    attempt = {"n": n, "at": started, "status_code": code, "latency_ms": result.latency_ms, "error": error}
    deps.records.record_attempt(message.delivery_id, attempt, state)
    return f"attempt {n} of {message.delivery_id}: {code or result.error} → {state.value}"


def redeliver(deps: WebhookDeps, deployment_id: str, delivery_id: str) -> dict[str, Any] | None:
    """A fresh delivery of the event of ``delivery_id`` (same ``webhook-id``); None if no such delivery here."""
    original = deps.records.get(delivery_id)
    if original is None or original.data.get("deployment_id") != deployment_id:
        return None
    fresh = fresh_delivery_id()
    record = {key: original.data[key] for key in _COPIED if key in original.data}
    record |= {"delivery_id": fresh, "redelivery_of": delivery_id}
    deps.records.create(record)
    schedule_attempt(deps.tasks, fresh, deployment_id, 0, 0)
    created = deps.records.get(fresh)
    return created.data if created is not None else record

"""The one delivery adapter: every function takes its Pub/Sub events and its Cloud Tasks here, and one table maps
what its step did to what the transport sees.

- the delivery does not parse: logged, acknowledged (Pub/Sub) or 204 (Cloud Tasks);
- an event older than ``MAX_EVENT_AGE_S``: dropped, or the function's late step runs (a teardown is retried
  however late); tasks have no age;
- the step returned (what it did, logged): acknowledged, or 204;
- ``PermanentError``: the deployment fails with its reason and is torn down (where the function has a deployment to
  fail), then acknowledged or 204;
- ``RetryableError``: 500 for an event, 503 for a task: delivered again;
- anything else (a bug): logged with its type and stack (never its text), 500: delivered again.

A ``cloud_event`` function (provision, cleanup) answers 500 by raising, which functions-framework turns into the
500; an HTTP function answers with the status itself. Every line a step logs carries the delivery's ids
(:func:`shared.logging.bind`). The webhooks function takes its Pub/Sub events over HTTP: :func:`answer_event`
reads them as the same CloudEvent a ``cloud_event`` function gets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

from cloudevents.http import from_http
from flask import Request, Response

from shared import logging as slog
from shared.envelopes import MalformedDeliveryError, PubSubDelivery, TaskDelivery, parse_pubsub, parse_task
from shared.errors import PermanentError, RetryableError
from shared.http import log_unexpected
from shared.messages import Message

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
T = TypeVar("T")
_CORRELATED = ("deployment_id", "job_id")


class RedeliveryError(Exception):
    """Raised by :func:`receive_event` to have the event delivered again. It says only why (retryable, or a bug
    already logged with its stack): the step's own exception text, which may quote input, never reaches a log."""


class Outcome(Enum):
    DONE = 204
    RETRY = 503
    BUG = 500


@dataclass(frozen=True)
class Receiver(Generic[T]):
    """One function's side of the table: its step (over the message of an event, or over the whole delivery of a
    task), the message model, how it fails a deployment on a ``PermanentError`` (None: it has none to fail, and the
    delivery is acknowledged), and for events, the age past which they are dropped and the step that still runs
    then (a teardown is retried however late)."""

    name: str
    model: type[Message]
    step: Callable[[T], str]
    fail: Callable[[str, PermanentError], None] | None = None
    max_event_age_s: float | None = None
    late_step: Callable[[T], str] | None = None
    # How an event's message is read, when it is no message model (the webhooks function's lifecycle events).
    parse_event: Callable[[Any], PubSubDelivery[Any]] | None = None


def receive_event(event: Any, receiver: Receiver[Any]) -> None:
    """A Pub/Sub CloudEvent to a ``cloud_event`` function: returns to acknowledge, raises to be delivered again."""
    outcome = _event_outcome(event, receiver)
    if outcome is not Outcome.DONE:
        raise RedeliveryError(f"{receiver.name}: {outcome.name.lower()}")


def answer_event(request: Request, receiver: Receiver[Any]) -> Response:
    """A Pub/Sub CloudEvent (Eventarc's binary mode) to an HTTP function."""
    try:
        event = from_http(dict(request.headers), request.get_data())
    except Exception as exc:  # the cloudevents SDK raises several types for a body that is no CloudEvent
        logger.warning("acknowledged a request that is no CloudEvent: %s", type(exc).__name__)
        return Response(status=Outcome.DONE.value)
    return Response(status=_event_outcome(event, receiver).value)


def answer_task(request: Request, receiver: Receiver[TaskDelivery[Any]]) -> Response:
    """A Cloud Tasks delivery (its message model is ``receiver.model``; the step gets the whole delivery)."""
    try:
        task = parse_task(request.get_data(), dict(request.headers), receiver.model)
    except MalformedDeliveryError as exc:
        with slog.bind(execution_id=exc.delivery_id or None, step=receiver.name):
            logger.error("dropped a malformed task: %s", exc)
        return Response(status=Outcome.DONE.value)
    ids = {name: getattr(task.message, name, None) for name in _CORRELATED}
    # A webhook delivery's attempt is its own count (WEBHOOK_RETRY_SCHEDULE_S); otherwise the queue's retry.
    attempt = getattr(task.message, "attempt", task.retry_count)
    with slog.bind(step=receiver.name, execution_id=task.task_name, attempt=attempt, **ids):
        outcome = _settle(receiver, ids["deployment_id"], lambda: receiver.step(task))
    return Response(status=outcome.value)


def _event_outcome(event: Any, receiver: Receiver[Any]) -> Outcome:
    try:
        delivery: PubSubDelivery[Any] = (receiver.parse_event or (lambda e: parse_pubsub(e, receiver.model)))(event)
    except MalformedDeliveryError as exc:
        with slog.bind(execution_id=exc.delivery_id or None, step=receiver.name):
            logger.error("dropped a malformed delivery: %s", exc)
        return Outcome.DONE
    deployment_id = getattr(delivery.message, "deployment_id", None)
    with slog.bind(deployment_id=deployment_id, execution_id=delivery.message_id, step=receiver.name):
        step = receiver.step
        if receiver.max_event_age_s is not None and delivery.age_s() > receiver.max_event_age_s:
            if receiver.late_step is None:
                logger.warning("dropped a delivery %.0f s old", delivery.age_s())
                return Outcome.DONE
            step = receiver.late_step
        return _settle(receiver, deployment_id, lambda: step(delivery.message))


def _settle(receiver: Receiver[Any], deployment_id: str | None, run: Callable[[], str]) -> Outcome:
    """Run the step and classify what happened (the table above)."""
    try:
        logger.info(run())
    except PermanentError as exc:
        if receiver.fail is not None and deployment_id:
            receiver.fail(deployment_id, exc)
        else:
            logger.warning("acknowledged a permanent failure: %s", exc.reason)
        return Outcome.DONE
    except RetryableError as exc:
        logger.warning("will be retried: %s", exc)
        return Outcome.RETRY
    except Exception as exc:
        # Logged here, inside the binding (Flask's own log would lack the ids), without its text.
        log_unexpected(exc, receiver.name)
        return Outcome.BUG
    return Outcome.DONE

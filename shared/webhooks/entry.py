"""The webhooks function's transport adapter: Pub/Sub events at ``/``, its own Cloud Tasks at ``/deliver``.

Same outcomes as every event-driven entry (shared/steps/runner.py): a malformed delivery, or a message on the topic
that is no lifecycle CloudEvent, is logged and acknowledged; an event older than ``MAX_EVENT_AGE_S`` is dropped;
a retryable failure (Firestore, Cloud Tasks) or a bug answers 500, so Pub/Sub or Cloud Tasks deliver again.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

from flask import Request, Response

from shared import logging as slog
from shared.envelopes import MalformedDeliveryError, parse_pubsub
from shared.events import NotALifecycleEventError, parse_message
from shared.http import answer_task, task_outcome
from shared.messages import _Message
from shared.webhooks.steps import WebhookAttempt, WebhookDeps, deliver, dispatch_event

logger = logging.getLogger(__name__)


class _AnyMessage(_Message):
    """Any JSON object: the envelope is parsed for its metadata; the event itself by shared.events."""


class _Push:
    """A Pub/Sub push body (Eventarc's binary CloudEvent body, or the raw push) as parse_pubsub reads events."""

    def __init__(self, data: Any, event_id: str | None) -> None:
        self.data = data
        self._id = event_id

    def __getitem__(self, name: str) -> Any:
        if name == "id" and self._id:
            return self._id
        raise KeyError(name)


def handle(request: Request, deps: WebhookDeps) -> Response:
    if request.method != "POST":
        return Response("POST only", status=405, headers={"Allow": "POST"})
    if request.path.rstrip("/").endswith("/deliver"):
        return _task(request, deps)
    return _event(request, deps)


def _event(request: Request, deps: WebhookDeps) -> Response:
    push: Any = request.get_json(silent=True)
    try:
        delivery = parse_pubsub(_Push(push, request.headers.get("ce-id")), _AnyMessage)
        raw = base64.b64decode(push["message"]["data"], validate=True)
        event = parse_message(delivery.attributes, raw)
    except (MalformedDeliveryError, NotALifecycleEventError, KeyError, TypeError, binascii.Error) as exc:
        logger.warning("ignored a message that is no lifecycle event: %s", type(exc).__name__)
        return Response(status=204)
    with slog.bind(deployment_id=event.subject, execution_id=delivery.message_id, step="dispatch_event"):
        if delivery.age_s() > deps.settings.max_event_age_s:
            logger.warning("dropped an event %.0f s old", delivery.age_s())
            return Response(status=204)
        return task_outcome("dispatch_event", lambda: dispatch_event(event, deps))


def _task(request: Request, deps: WebhookDeps) -> Response:
    return answer_task(request, WebhookAttempt, "deliver", lambda task: deliver(task, deps))

"""The webhooks function's side of the delivery adapter (shared.delivery): lifecycle CloudEvents from Pub/Sub at
``/``, its own Cloud Tasks at ``/deliver``. A message on the topic that is no lifecycle CloudEvent is malformed for
this subscriber: logged and acknowledged."""

from __future__ import annotations

from typing import Any

from flask import Request, Response

from shared.delivery import Receiver, answer_event, answer_task
from shared.deployments.events import NotALifecycleEventError, ReceivedEvent, parse_message
from shared.envelopes import MalformedDeliveryError, PubSubDelivery, TaskDelivery, pubsub_data
from shared.messages import Message
from shared.webhooks.steps import WebhookAttempt, WebhookDeps, deliver, dispatch_event


def lifecycle_event(event: Any) -> PubSubDelivery[ReceivedEvent]:
    """The lifecycle event a Pub/Sub CloudEvent carries (binary mode: ce-* attributes, the view as data)."""
    raw = pubsub_data(event)
    try:
        received = parse_message(raw.attributes, raw.message)
    except NotALifecycleEventError as exc:
        raise MalformedDeliveryError(str(exc), raw.message_id) from exc
    return PubSubDelivery(received, raw.message_id, raw.published_at, raw.attributes)


class Entry:
    """Both receivers of the function, built once per instance."""

    def __init__(self, deps: WebhookDeps) -> None:
        self._events = Receiver[ReceivedEvent](
            "dispatch_event",
            Message,
            lambda event: dispatch_event(event, deps),
            max_event_age_s=deps.settings.max_event_age_s,
            parse_event=lifecycle_event,
        )
        self._tasks = Receiver[TaskDelivery[WebhookAttempt]](
            "deliver", WebhookAttempt, lambda task: deliver(task, deps)
        )

    def __call__(self, request: Request) -> Response:
        if request.method != "POST":
            return Response("POST only", status=405, headers={"Allow": "POST"})
        if request.path.rstrip("/").endswith("/deliver"):
            return answer_task(request, self._tasks)
        return answer_event(request, self._events)

"""Two-stage parsing: one envelope per transport, whose ``parse`` returns the domain message.

- Pub/Sub via Eventarc: a CloudEvent whose data is ``{"message": {"data": <base64 JSON>, "attributes", ...}}``.
- Cloud Tasks: an HTTP POST with the JSON body and ``X-CloudTasks-*`` headers.

A delivery that does not parse is malformed for good: the handlers acknowledge it (a retry cannot fix it).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from shared.messages import Message

M = TypeVar("M", bound=Message)
P = TypeVar("P")  # what a delivery carries: a message, or its raw data
# RFC 3339 allows nanoseconds (Pub/Sub sends them); datetime takes at most microseconds.
_EXTRA_DIGITS = re.compile(r"(\.\d{6})\d+")


class MalformedDeliveryError(Exception):
    """The delivery is not a message of the expected schema; ``delivery_id`` names it in the logs (the Pub/Sub
    message id or the task name, empty when the delivery does not say)."""

    def __init__(self, message: str, delivery_id: str) -> None:
        super().__init__(message)
        self.delivery_id = delivery_id


@dataclass(frozen=True)
class PubSubDelivery(Generic[P]):
    message: P
    message_id: str
    published_at: datetime | None
    attributes: dict[str, str]

    def age_s(self, now: datetime | None = None) -> float:
        """Seconds since the publish (0 when unknown)."""
        if self.published_at is None:
            return 0.0
        return ((now or datetime.now(UTC)) - self.published_at).total_seconds()


@dataclass(frozen=True)
class TaskDelivery(Generic[M]):
    message: M
    task_name: str
    retry_count: int
    queue: str


def parse_pubsub(event: Any, model: type[M]) -> PubSubDelivery[M]:
    """The message of a Pub/Sub CloudEvent (``functions_framework`` passes a ``cloudevents`` event)."""
    raw = pubsub_data(event)
    try:
        parsed = model.model_validate_json(raw.message)
    except ValidationError as exc:
        raise MalformedDeliveryError(
            f"not a {model.__name__} Pub/Sub message: {type(exc).__name__}", raw.message_id
        ) from exc
    return PubSubDelivery(parsed, raw.message_id, raw.published_at, raw.attributes)


def pubsub_data(event: Any) -> PubSubDelivery[bytes]:
    """The raw data of a Pub/Sub CloudEvent's message, with its id, publish time and attributes."""
    data = event.get_data() if hasattr(event, "get_data") else event.data
    try:
        message = data["message"]
        raw = base64.b64decode(message.get("data") or "", validate=True)
    except (KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise MalformedDeliveryError(
            f"not a Pub/Sub message: {type(exc).__name__}", str(_attribute(event, "id") or "")
        ) from exc
    published = message.get("publishTime") or message.get("publish_time") or _attribute(event, "time")
    return PubSubDelivery(
        message=raw,
        message_id=str(message.get("messageId") or message.get("message_id") or _attribute(event, "id") or ""),
        published_at=_timestamp(published),
        attributes=dict(message.get("attributes") or {}),
    )


def parse_task(body: bytes, headers: Mapping[str, str], model: type[M]) -> TaskDelivery[M]:
    """The message of a Cloud Tasks HTTP request."""
    try:
        parsed = model.model_validate_json(body)
    except ValidationError as exc:
        raise MalformedDeliveryError(
            f"not a {model.__name__} task body", headers.get("X-CloudTasks-TaskName", "")
        ) from exc
    return TaskDelivery(
        message=parsed,
        task_name=headers.get("X-CloudTasks-TaskName", ""),
        retry_count=_int(headers.get("X-CloudTasks-TaskRetryCount")),
        queue=headers.get("X-CloudTasks-QueueName", ""),
    )


def _attribute(event: Any, name: str) -> Any:
    try:
        return event[name]
    except (KeyError, TypeError):
        return None


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(_EXTRA_DIGITS.sub(r"\1", value.replace("Z", "+00:00")))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0

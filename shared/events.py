"""Lifecycle CloudEvents on ``deployment-events``: one per status change, for integrations and the webhooks function.

Built with the ``cloudevents`` SDK and sent in binary content mode as the CloudEvents Google Cloud Pub/Sub protocol
binding defines it: every context attribute is a message attribute named ``ce-<attribute>`` (``ce-specversion``,
``ce-id``, ``ce-source``, ``ce-type``, ``ce-time``, ``ce-subject``), the data content type is the attribute
``content-type``, and the message data is the event data: the public view of the deployment (``DeploymentView``),
never a secret. The ordering key is the deployment id. The schema is documented in docs/events/ and only ever gains
fields.

``ce-id`` is stable for one transition (deployment id, status and the time it was entered), so a publish repeated
after a lost acknowledgement carries the same id and subscribers dedupe by it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from shared.document import Deployment
from shared.pubsub import Publisher
from shared.topology import TOPIC_DEPLOYMENT_EVENTS

SPEC_VERSION = "1.0"
EVENT_SOURCE = "//visgate/deployments"
EVENT_TYPE_PREFIX = "visgate.deployment."
CONTENT_TYPE = "application/json"


def transition_time(doc: Deployment) -> datetime:
    """When the document entered its current status."""
    at = doc.phase_timestamps.get(doc.status) or doc.updated_at
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def event_id(deployment_id: str, status: str, at: datetime) -> str:
    """Stable per transition: the same status entered at the same instant is the same event."""
    return f"{deployment_id}:{status}:{int(at.timestamp() * 1_000_000)}"


def event_type(status: str) -> str:
    return f"{EVENT_TYPE_PREFIX}{status}"


def lifecycle_event(doc: Deployment) -> CloudEvent:
    """The CloudEvent of the document's current status."""
    view = doc.view()
    at = transition_time(doc)
    attributes = {
        "specversion": SPEC_VERSION,
        "id": event_id(view.deployment_id, view.status.value, at),
        "source": EVENT_SOURCE,
        "type": event_type(view.status.value),
        "time": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "subject": view.deployment_id,
        "datacontenttype": CONTENT_TYPE,
    }
    return CloudEvent(attributes, view.model_dump(mode="json"))


def pubsub_message(event: CloudEvent) -> tuple[bytes, dict[str, str]]:
    """The Pub/Sub message (data, attributes) of ``event`` in binary content mode.

    The HTTP binary binding's header names are exactly the Pub/Sub binding's attribute names (``ce-*`` and
    ``content-type``), so the SDK's binary conversion gives both.
    """
    headers, body = to_binary(event)
    data = body if isinstance(body, bytes) else str(body).encode()
    return data, {str(k).lower(): str(v) for k, v in headers.items()}


def publish_lifecycle_event(publisher: Publisher, doc: Deployment) -> str:
    """Publish the event of the document's current status (ordering key: the deployment id); the message id."""
    data, attributes = pubsub_message(lifecycle_event(doc))
    return publisher.publish_bytes(TOPIC_DEPLOYMENT_EVENTS, data, attributes, ordering_key=doc.deployment_id)


@dataclass(frozen=True)
class ReceivedEvent:
    """A lifecycle event as a subscriber reads it from a Pub/Sub message."""

    id: str
    type: str
    subject: str
    time: datetime
    data: dict[str, Any]

    @property
    def status(self) -> str:
        return self.type.removeprefix(EVENT_TYPE_PREFIX)


class NotALifecycleEventError(ValueError):
    """The message is no lifecycle CloudEvent of this schema (another producer's message on the topic)."""


def parse_message(attributes: dict[str, str], data: bytes) -> ReceivedEvent:
    """Read a lifecycle event from Pub/Sub message attributes and data.

    Raises:
        NotALifecycleEventError: a required attribute is missing, or the data is not a JSON object.
    """
    try:
        kind = attributes["ce-type"]
        received = ReceivedEvent(
            id=attributes["ce-id"],
            type=kind,
            subject=attributes["ce-subject"],
            time=datetime.fromisoformat(attributes["ce-time"].replace("Z", "+00:00")),
            data=json.loads(data),
        )
    except (KeyError, ValueError) as exc:
        raise NotALifecycleEventError(f"not a lifecycle CloudEvent: {type(exc).__name__}") from exc
    if not kind.startswith(EVENT_TYPE_PREFIX) or not isinstance(received.data, dict):
        raise NotALifecycleEventError(f"not a lifecycle CloudEvent type: {kind!r}")
    return received

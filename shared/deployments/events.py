"""Lifecycle CloudEvents on ``deployment-events``: one per status change, for integrations and the webhooks function.

Built with the ``cloudevents`` SDK and sent in binary content mode as the CloudEvents Google Cloud Pub/Sub protocol
binding defines it: every context attribute is a message attribute named ``ce-<attribute>`` (``ce-specversion``,
``ce-id``, ``ce-source``, ``ce-type``, ``ce-time``, ``ce-subject``), the data content type is the attribute
``content-type``, and the message data is the event data: the public view of the deployment (``DeploymentView``),
never a secret. The ordering key is the deployment id. The schema is documented in docs/events/ and only ever gains
fields.

``ce-id`` is stable for one transition (deployment id, status and the time it was entered), so a publish repeated
after a lost acknowledgement carries the same id and subscribers dedupe by it.

Three events are no status change: ``visgate.deployment.gpu_switched``, when the readiness watchdog moves an endpoint
whose workers found no capacity to the next pools (``ce-id`` ``<deployment id>:gpu_switch:<n>``); its data is the
view plus ``gpu_switch: {from, to, throttled_s}``. ``visgate.deployment.budget_warning`` and
``visgate.deployment.budget_exhausted``, when the deployment's ``usage.estimated_cost_usd`` reaches 80 % and 100 % of
its ``max_cost_usd`` (``ce-id`` ``<deployment id>:<kind>:<budget generation>``: once per crossing); their data is
the view plus ``budget: {max_cost_usd, estimated_cost_usd, threshold}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from pydantic import BaseModel, Field

from shared.document import Deployment
from shared.models import DeploymentView
from shared.pubsub import Publisher
from shared.topology import TOPIC_DEPLOYMENT_EVENTS

SPEC_VERSION = "1.0"
EVENT_SOURCE = "//visgate/deployments"
EVENT_TYPE_PREFIX = "visgate.deployment."
CONTENT_TYPE = "application/json"
GPU_SWITCHED = "gpu_switched"  # event types that are no status
BUDGET_WARNING = "budget_warning"
BUDGET_EXHAUSTED = "budget_exhausted"
NO_STATUS_KINDS = (GPU_SWITCHED, BUDGET_WARNING, BUDGET_EXHAUSTED)


def transition_time(doc: Deployment) -> datetime:
    """When the document entered its current status."""
    at = doc.phase_timestamps.get(doc.status) or doc.updated_at
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def event_id(deployment_id: str, status: str, at: datetime) -> str:
    """Stable per transition: the same status entered at the same instant is the same event."""
    return f"{deployment_id}:{status}:{int(at.timestamp() * 1_000_000)}"


def event_type(status: str) -> str:
    return f"{EVENT_TYPE_PREFIX}{status}"


class GpuSwitch(BaseModel):
    """What a GPU pool switch did: the pools the endpoint left, the ones it got, and how long it waited."""

    from_pools: list[str] = Field(serialization_alias="from")
    to: list[str]
    throttled_s: float


class BudgetCrossing(BaseModel):
    """A budget crossing: the budget, the estimated cost that reached it, and the share crossed (0.8 or 1.0)."""

    max_cost_usd: float
    estimated_cost_usd: float
    threshold: float


def lifecycle_event(doc: Deployment) -> CloudEvent:
    """The CloudEvent of the document's current status."""
    view = doc.view()
    at = transition_time(doc)
    return _cloud_event(view, event_id(view.deployment_id, view.status.value, at), view.status.value, at)


def gpu_switch_event(doc: Deployment, switch: int, at: datetime, detail: GpuSwitch) -> CloudEvent:
    """The CloudEvent of the deployment's ``switch``-th GPU pool switch (its id is stable: a repeat dedupes)."""
    extra = {"gpu_switch": detail.model_dump(mode="json", by_alias=True)}
    return _cloud_event(doc.view(), f"{doc.deployment_id}:gpu_switch:{switch}", GPU_SWITCHED, at, extra)


def budget_event(doc: Deployment, kind: str, at: datetime, detail: BudgetCrossing) -> CloudEvent:
    """The CloudEvent of a budget crossing (``kind`` :data:`BUDGET_WARNING` or :data:`BUDGET_EXHAUSTED`); its id is
    stable per crossing of one budget generation, so a repeat dedupes."""
    extra = {"budget": detail.model_dump(mode="json")}
    return _cloud_event(doc.view(), f"{doc.deployment_id}:{kind}:{doc.budget.generation}", kind, at, extra)


def _cloud_event(
    view: DeploymentView, id_: str, kind: str, at: datetime, extra: dict[str, Any] | None = None
) -> CloudEvent:
    attributes = {
        "specversion": SPEC_VERSION,
        "id": id_,
        "source": EVENT_SOURCE,
        "type": event_type(kind),
        "time": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "subject": view.deployment_id,
        "datacontenttype": CONTENT_TYPE,
    }
    return CloudEvent(attributes, {**view.model_dump(mode="json"), **(extra or {})})


def pubsub_message(event: CloudEvent) -> tuple[bytes, dict[str, str]]:
    """The Pub/Sub message (data, attributes) of ``event`` in binary content mode.

    The HTTP binary binding's header names are exactly the Pub/Sub binding's attribute names (``ce-*`` and
    ``content-type``), so the SDK's binary conversion gives both.
    """
    headers, body = to_binary(event)
    data = body if isinstance(body, bytes) else str(body).encode()
    return data, {str(k).lower(): str(v) for k, v in headers.items()}


def publish_event(publisher: Publisher, event: CloudEvent) -> str:
    """Publish a deployment's event (ordering key: the deployment id, its subject); the message id."""
    data, attributes = pubsub_message(event)
    return publisher.publish_bytes(TOPIC_DEPLOYMENT_EVENTS, data, attributes, ordering_key=attributes["ce-subject"])


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

    @property
    def deployment_id(self) -> str:
        return self.subject


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

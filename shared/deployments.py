"""Status changes that also tell the world: every transition publishes one lifecycle CloudEvent.

A repeated transition (a duplicate or late delivery) changes nothing in Firestore but publishes the same event
again with the same ``event_id``: if the first publish was lost after the write, the retry repairs it, and
subscribers dedupe by id.
"""

from __future__ import annotations

from typing import Any

from shared.lifecycle import Status
from shared.messages import LifecycleEvent
from shared.pubsub import Publisher
from shared.store import DeploymentStore, TransitionResult
from shared.topology import TOPIC_DEPLOYMENT_EVENTS


class Lifecycle:
    def __init__(self, store: DeploymentStore, publisher: Publisher) -> None:
        self.store = store
        self._publisher = publisher

    def transition(
        self,
        deployment_id: str,
        to: Status,
        message: str,
        *,
        fields: dict[str, Any] | None = None,
        level: str = "info",
        detail: dict[str, Any] | None = None,
    ) -> TransitionResult:
        result = self.store.transition(deployment_id, to, message, fields=fields, level=level)
        self.publish(result.document, result.previous if result.changed else None, detail)
        return result

    def publish(self, doc: dict[str, Any], previous: Status | None, detail: dict[str, Any] | None = None) -> None:
        """Publish the lifecycle event of the document's current status."""
        status = doc["status"]
        at = (doc.get("phase_timestamps") or {}).get(status) or doc["updated_at"]
        event = LifecycleEvent(
            event_id=f"{doc['deployment_id']}:{status}:{int(at.timestamp() * 1_000_000)}",
            deployment_id=doc["deployment_id"],
            owner=doc["owner"],
            status=status,
            previous_status=previous.value if previous else None,
            time=at,
            error=doc.get("error"),
            detail=detail,
        )
        self._publisher.publish(
            TOPIC_DEPLOYMENT_EVENTS,
            event,
            deployment_id=event.deployment_id,
            status=status,
            event_id=event.event_id,
        )

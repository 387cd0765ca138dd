"""Status changes that also tell the world: every transition publishes one lifecycle CloudEvent.

A repeated transition (a duplicate or late delivery) changes nothing in Firestore but publishes the same event
again with the same ``event_id``: if the first publish was lost after the write, the retry repairs it, and
subscribers dedupe by id.
"""

from __future__ import annotations

from typing import Any

from shared.events import publish_lifecycle_event
from shared.lifecycle import Status
from shared.pubsub import Publisher
from shared.store import DeploymentStore, TransitionResult


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
        """Publish the lifecycle CloudEvent of the document's current status (shared/events.py)."""
        publish_lifecycle_event(self._publisher, doc)

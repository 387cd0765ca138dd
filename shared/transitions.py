"""The one path for every status change of a deployment and the lifecycle event it publishes.

A change is one conditional write (see :meth:`DeploymentStore.update`) that first asks the state machine
(:mod:`shared.lifecycle`) whether the move is allowed, then one event on ``deployment-events``. A repeated
transition (a duplicate or late delivery) changes nothing in Firestore but publishes the same event again with the
same ``event_id``: if the first publish was lost after the write, the retry repairs it, and subscribers dedupe by id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.document import Deployment
from shared.errors import IllegalTransitionError
from shared.lifecycle import Status, can_transition
from shared.messages import LifecycleEvent
from shared.pubsub import Publisher
from shared.store import DeploymentStore, utcnow
from shared.topology import TOPIC_DEPLOYMENT_EVENTS

logger = logging.getLogger(__name__)

_MAX_ERROR_MESSAGE = 500
_DELETE_STATUSES = frozenset({Status.DELETING, Status.DELETED})


@dataclass(frozen=True)
class TransitionResult:
    """``changed`` is False for a repeated identical transition (a no-op)."""

    changed: bool
    previous: Status
    document: Deployment


class Transitions:
    def __init__(self, store: DeploymentStore, publisher: Publisher) -> None:
        self.store = store
        self._publisher = publisher

    def move(
        self,
        deployment_id: str,
        to: Status,
        message: str,
        *,
        apply: Callable[[Deployment], None] | None = None,
        level: str = "info",
    ) -> TransitionResult:
        """Move to ``to`` (and let ``apply`` set the fields that come with it); a repeat of the current status is a
        no-op that publishes its event again.

        Raises:
            DeploymentNotFoundError: no such deployment.
            IllegalTransitionError: the state machine refuses the move (backwards, out of a terminal status).
        """
        seen: list[Deployment] = []

        def change(doc: Deployment) -> bool:
            seen[:] = [doc.model_copy(deep=True)]
            if doc.status is to:
                return False
            if not can_transition(doc.status, to):
                raise IllegalTransitionError(doc.status.value, to.value)
            doc.phase_timestamps = {**doc.phase_timestamps, to: utcnow()}
            doc.status = to
            if apply is not None:
                apply(doc)
            return True

        written = self.store.update(deployment_id, change, message, level)
        previous = seen[0].status
        result = TransitionResult(written is not None, previous, written or seen[0])
        self._publish(result.document, previous if result.changed else None)
        return result

    def fail(self, deployment_id: str, reason: str, message: str) -> TransitionResult:
        """Move to ``failed`` with ``reason``; the first reason wins (a repeat keeps the recorded error)."""
        message = message[:_MAX_ERROR_MESSAGE]

        def record_error(doc: Deployment) -> None:
            doc.error = {"code": reason, "message": message}  # type: ignore[assignment]  # validated on assignment

        result = self.move(
            deployment_id, Status.FAILED, f"failed ({reason}): {message}", apply=record_error, level="error"
        )
        logger.warning("deployment failed: %s", reason, extra={"fields": {"reason": reason}})
        return result

    def announce(self, doc: Deployment, event_id: str, at: datetime, detail: dict[str, Any]) -> None:
        """An event about the deployment that is no status change (a GPU pool switch), published before the write
        that records it: a retry after either repeats the same event id, so none is lost or doubled."""
        self._send(
            LifecycleEvent(
                event_id=event_id,
                deployment_id=doc.deployment_id,
                owner=doc.owner,
                status=doc.status.value,
                time=at,
                detail=detail,
            )
        )

    def _publish(self, doc: Deployment, previous: Status | None) -> None:
        """The lifecycle event of the document's current status."""
        at = doc.phase_timestamps.get(doc.status) or doc.updated_at
        self._send(
            LifecycleEvent(
                event_id=f"{doc.deployment_id}:{doc.status.value}:{int(at.timestamp() * 1_000_000)}",
                deployment_id=doc.deployment_id,
                owner=doc.owner,
                status=doc.status.value,
                previous_status=previous.value if previous else None,
                time=at,
                error=doc.error.model_dump() if doc.error else None,
                delete_reason=doc.delete_reason if doc.status in _DELETE_STATUSES else None,
            )
        )

    def _send(self, event: LifecycleEvent) -> None:
        self._publisher.publish(
            TOPIC_DEPLOYMENT_EVENTS,
            event,
            deployment_id=event.deployment_id,
            status=event.status,
            event_id=event.event_id,
        )

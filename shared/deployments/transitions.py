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

from shared.deployments.events import (
    BudgetCrossing,
    GpuSwitch,
    budget_event,
    gpu_switch_event,
    lifecycle_event,
    publish_event,
)
from shared.document import Deployment
from shared.errors import IllegalTransitionError
from shared.lifecycle import Status, can_transition
from shared.pubsub import Publisher
from shared.store import DeploymentStore, utcnow

logger = logging.getLogger(__name__)

_MAX_ERROR_MESSAGE = 500


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
        self._publish(result.document)
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

    def announce_gpu_switch(self, doc: Deployment, switch: int, at: datetime, detail: GpuSwitch) -> None:
        """An event that is no status change (a GPU pool switch), published before the write that records it: a
        retry after either repeats the same event id, so none is lost or doubled."""
        publish_event(self._publisher, gpu_switch_event(doc, switch, at, detail))

    def announce_budget(self, doc: Deployment, kind: str, at: datetime, detail: BudgetCrossing) -> None:
        """A budget crossing (no status change), published before the write that records it (as a GPU switch)."""
        publish_event(self._publisher, budget_event(doc, kind, at, detail))

    def _publish(self, doc: Deployment) -> None:
        """The lifecycle CloudEvent of the document's current status (shared/deployments/events.py)."""
        publish_event(self._publisher, lifecycle_event(doc))

"""A budget per deployment (``max_cost_usd``): checked where a job's end is recorded (shared.jobs.ends).

- At 80 % of the budget in ``usage.estimated_cost_usd``: a ``visgate.deployment.budget_warning`` CloudEvent (and,
  through the webhooks function, a signed ``deployment.budget_warning`` delivery for a webhook subscriber).
- At 100 %: the deployment is stopped as the owner's stop does it (workers min = max = 0 on Runpod, the endpoint
  kept, ``ready → stopped`` with ``stop_reason: "budget"``), after a ``visgate.deployment.budget_exhausted`` event.
  A start is refused (409 ``budget_exhausted``) until the budget is raised or cleared
  (``PATCH /v1/deployments/{id}``).
- Once per crossing: ``budget.generation`` grows with every change of the budget, and ``budget.warned`` /
  ``budget.exhausted`` record the generation announced. The event is published (and the stop done) before the mark
  is written, so a retry after a failure in between repeats the same event id (subscribers and the webhooks
  function dedupe by it) rather than losing it; whoever sees the crossing first marks it, the others find it marked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.deployments.events import BUDGET_EXHAUSTED, BUDGET_WARNING, BudgetCrossing
from shared.deployments.transitions import Transitions
from shared.document import Deployment
from shared.errors import IllegalTransitionError, PermanentError, RetryableError
from shared.lifecycle import Status
from shared.runpod.client import EndpointChange, RunpodClient, WorkerLimits
from shared.runpod.errors import RunpodNotFoundError
from shared.store import DeploymentStore, utcnow

logger = logging.getLogger(__name__)

WARN_SHARE = 0.8


def budget_left(doc: Deployment) -> bool:
    """Whether the deployment may run: no budget, or its estimated cost is below it."""
    return doc.max_cost_usd is None or doc.usage.estimated_cost_usd < doc.max_cost_usd


@dataclass(frozen=True)
class BudgetGuard:
    store: DeploymentStore
    transitions: Transitions

    def check(self, client: RunpodClient, deployment_id: str) -> list[str]:
        """Announce (and act on) the crossings the deployment's current usage makes; the kinds announced now.

        Raises:
            RetryableError: Runpod did not take the stop, or the document kept changing (nothing is marked: a
                retry announces the same event again and stops again).
        """
        doc = self.store.get(deployment_id)
        if doc is None or doc.max_cost_usd is None:
            return []
        budget, cost, generation = doc.max_cost_usd, doc.usage.estimated_cost_usd, doc.budget.generation
        announced: list[str] = []
        if cost >= WARN_SHARE * budget and doc.budget.warned != generation:
            self._announce(doc, BUDGET_WARNING, WARN_SHARE)
            self._mark(deployment_id, generation, BUDGET_WARNING, f"budget: {cost:.4f} of {budget} USD (80 %) used")
            announced.append(BUDGET_WARNING)
        if cost >= budget and doc.budget.exhausted != generation:
            self._announce(doc, BUDGET_EXHAUSTED, 1.0)
            self._stop(client, doc)
            self._mark(deployment_id, generation, BUDGET_EXHAUSTED, f"budget: {cost:.4f} of {budget} USD used")
            announced.append(BUDGET_EXHAUSTED)
        return announced

    def _announce(self, doc: Deployment, kind: str, share: float) -> None:
        assert doc.max_cost_usd is not None
        crossing = BudgetCrossing(
            max_cost_usd=doc.max_cost_usd, estimated_cost_usd=doc.usage.estimated_cost_usd, threshold=share
        )
        self.transitions.announce_budget(doc, kind, utcnow(), crossing)
        logger.warning("deployment budget crossed: %s", kind, extra={"fields": {"event": kind}})

    def _stop(self, client: RunpodClient, doc: Deployment) -> None:
        """Workers to 0 on Runpod (the endpoint kept), then ``ready → stopped`` with ``stop_reason: "budget"``."""
        if doc.status not in (Status.READY, Status.STOPPED) or doc.runpod.endpoint_id is None:
            return  # not serving (provisioning, failed, deleting): nothing runs on its budget's account here
        try:
            client.update_endpoint(
                doc.runpod.endpoint_id, EndpointChange(workers=WorkerLimits(min=0, max=0, idleTimeout=None))
            )
        except RunpodNotFoundError:
            return  # the endpoint is gone: nothing bills
        except PermanentError as exc:
            raise RetryableError(f"Runpod did not take the budget stop: {type(exc).__name__}") from exc
        if doc.status is not Status.READY:
            return

        def record(d: Deployment) -> None:
            d.stopped_at = utcnow()
            d.stop_reason = "budget"

        try:
            self.transitions.move(
                doc.deployment_id,
                Status.STOPPED,
                "stopped: its budget (max_cost_usd) is used up; workers scaled to 0 on Runpod, the endpoint is kept",
                apply=record,
            )
        except IllegalTransitionError:
            logger.info("the deployment left ready before its budget stop")

    def _mark(self, deployment_id: str, generation: int, kind: str, message: str) -> None:
        def mark(d: Deployment) -> bool:
            if d.budget.generation != generation:
                return False  # the budget changed meanwhile: that generation's crossings are its own
            if kind == BUDGET_WARNING:
                if d.budget.warned == generation:
                    return False
                d.budget.warned = generation
            else:
                if d.budget.exhausted == generation:
                    return False
                d.budget.exhausted = generation
            return True

        self.store.update(deployment_id, mark, message, level="warning")

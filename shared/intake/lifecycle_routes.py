"""Stop and start: ``POST /v1/deployments/{id}/stop`` and ``/start`` (202), the ``ready ⇄ stopped`` half of the
lifecycle.

- stop: Runpod first (``PATCH workers {min: 0, max: 0}``: no worker runs, nothing bills, the endpoint is kept),
  then ``ready → stopped``. A retry after a failed move finds it ``ready`` and does both again; a stop of a
  ``stopped`` deployment repeats the PATCH (cheap, and it heals one whose workers were raised meanwhile) and answers
  202 again.
- start: the workers are restored to the deployment's own ``workers_min``/``workers_max`` (PATCH), then
  ``stopped → downloading_model`` and a warm-up job, so that the worker proves the model again and reports its
  phases up to ``ready``. The readiness watchdog watches the start anew (a new ``readiness.generation``, the
  whole ``READINESS_DEADLINE_S`` from the start): a worker that crashes or finds no capacity fails it as in
  provisioning, and the sweep's deadline stays the backstop. A start repeated while that runs answers 202 (and
  submits the warm-up, and schedules the watch, if the first attempt did not).

A start of a deployment whose budget is used up (``usage.estimated_cost_usd`` at or over ``max_cost_usd``) is 409
``budget_exhausted`` until ``PATCH /v1/deployments/{id}`` raises or clears the budget (:meth:`LifecycleRoutes.update`,
200 with the view; each change starts a new budget generation, whose crossings are announced anew).

Anything else is 409 ``invalid_state`` naming the current status. Both publish their lifecycle event through
:class:`shared.deployments.transitions.Transitions`; the caller's own key is the deployment's (the tenant is
derived from it).
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import BaseModel

from shared.deployments.budget import budget_left
from shared.deployments.readiness import schedule_readiness_check
from shared.document import BudgetWatch, Deployment, IdleWatch, ReadinessWatch
from shared.errors import ApiError, IllegalTransitionError, PermanentError, RetryableError
from shared.intake.auth import Caller
from shared.intake.steps import IntakeDeps, owned_deployment
from shared.lifecycle import Status
from shared.messages import ReadinessCheck
from shared.models import DeploymentView, UpdateDeploymentRequest
from shared.runpod.client import EndpointChange, RunpodClient, RunpodConnector, WorkerLimits
from shared.runpod.errors import RunpodAuthError, RunpodNotFoundError
from shared.store import utcnow
from shared.tasks import TaskScheduler

logger = logging.getLogger(__name__)

_RETRY = {"Retry-After": "5"}
_RESTARTING = frozenset({Status.DOWNLOADING_MODEL, Status.LOADING_MODEL})


class LifecycleActionResponse(BaseModel):
    deployment_id: str
    status: Literal["stopped", "downloading_model", "loading_model"]


def _invalid_state(doc: Deployment, action: str, wanted: Status) -> ApiError:
    return ApiError(
        409,
        "invalid_state",
        f"only a {wanted.value} deployment can be {action}; this one is {doc.status.value}",
        details={"status": doc.status.value},
    )


class LifecycleRoutes:
    """The handlers of stop and start, on the instance's Runpod connector and Cloud Tasks scheduler."""

    def __init__(self, deps: IntakeDeps, runpod: RunpodConnector, tasks: TaskScheduler) -> None:
        self._deps = deps
        self._runpod = runpod
        self._tasks = tasks

    def stop(self, caller: Caller, deployment_id: str) -> LifecycleActionResponse:
        doc = owned_deployment(self._deps.store, caller, deployment_id)
        if doc.status not in (Status.READY, Status.STOPPED):
            raise _invalid_state(doc, "stopped", Status.READY)
        self._scale(caller, doc, WorkerLimits(min=0, max=0, idleTimeout=None))
        if doc.status is Status.READY:

            def record(d: Deployment) -> None:
                d.stopped_at = utcnow()
                d.stop_reason = "user"

            try:
                self._deps.transitions.move(
                    deployment_id,
                    Status.STOPPED,
                    "stopped by the owner: workers scaled to 0 on Runpod, the endpoint is kept",
                    apply=record,
                )
            except IllegalTransitionError as exc:
                raise _invalid_state(self._current(caller, deployment_id), "stopped", Status.READY) from exc
        return LifecycleActionResponse(deployment_id=deployment_id, status="stopped")

    def start(self, caller: Caller, deployment_id: str) -> LifecycleActionResponse:
        doc = owned_deployment(self._deps.store, caller, deployment_id)
        if doc.status in _RESTARTING and doc.started_at is not None:
            # A repeated start: what its first attempt may not have done (the task name dedupes the watch).
            if doc.runpod.warmup_job_id is None:
                self._warm_up(caller, doc)
            self._watch(doc)
            return LifecycleActionResponse(deployment_id=deployment_id, status=doc.status.value)  # type: ignore[arg-type]
        if doc.status is not Status.STOPPED:
            raise _invalid_state(doc, "started", Status.STOPPED)
        if not budget_left(doc):
            raise ApiError(
                409,
                "budget_exhausted",
                "the deployment's budget is used up; raise or clear max_cost_usd (PATCH) before starting it",
                details={"max_cost_usd": doc.max_cost_usd, "estimated_cost_usd": doc.usage.estimated_cost_usd},
            )
        self._scale(caller, doc, WorkerLimits(min=doc.workers_min, max=doc.workers_max, idleTimeout=None))

        def restart(d: Deployment) -> None:
            d.started_at = utcnow()
            d.stop_reason = None
            d.progress = None
            d.idle = IdleWatch()
            d.runpod.warmup_job_id = None
            d.readiness = ReadinessWatch(generation=d.readiness.generation + 1)
            d.worker_last_report_at = None  # the watchdog judges what this start's worker reports

        try:
            moved = self._deps.transitions.move(
                deployment_id,
                Status.DOWNLOADING_MODEL,
                f"started by the owner: workers restored to {doc.workers_min}-{doc.workers_max}; "
                "the worker proves the model again",
                apply=restart,
            )
        except IllegalTransitionError as exc:
            raise _invalid_state(self._current(caller, deployment_id), "started", Status.STOPPED) from exc
        self._warm_up(caller, moved.document)
        self._watch(moved.document)
        return LifecycleActionResponse(deployment_id=deployment_id, status="downloading_model")

    def update(self, caller: Caller, deployment_id: str, change: UpdateDeploymentRequest) -> DeploymentView:
        """Set, raise, lower or clear the budget; a deployment being deleted is 409 ``invalid_state``."""
        owned_deployment(self._deps.store, caller, deployment_id)

        def apply(d: Deployment) -> bool:
            if d.status in (Status.DELETING, Status.DELETED):
                raise _invalid_state(d, "changed", Status.READY)
            if d.max_cost_usd == change.max_cost_usd:
                return False
            d.max_cost_usd = change.max_cost_usd
            d.budget = BudgetWatch(generation=d.budget.generation + 1)  # its crossings are announced anew
            return True

        what = "cleared" if change.max_cost_usd is None else f"set to {change.max_cost_usd} USD"
        self._deps.store.update(deployment_id, apply, f"budget (max_cost_usd) {what} by the owner")
        return owned_deployment(self._deps.store, caller, deployment_id).view()

    def _watch(self, doc: Deployment) -> None:
        """The watchdog's first look at this start. Runpod has the warm-up by now: a failure to schedule it is
        logged, not answered (the sweep's deadline still bounds the start)."""
        check = ReadinessCheck(deployment_id=doc.deployment_id, check=0, generation=doc.readiness.generation)
        try:
            schedule_readiness_check(self._tasks, check, self._deps.settings.readiness_first_check_s)
        except RetryableError as exc:
            logger.error("the watchdog of this start was not scheduled: %s", exc)

    # --- Runpod --------------------------------------------------------------------------------------------------

    def _current(self, caller: Caller, deployment_id: str) -> Deployment:
        return owned_deployment(self._deps.store, caller, deployment_id)

    def _client(self, caller: Caller) -> RunpodClient:
        return self._runpod.client(caller.api_key)

    def _scale(self, caller: Caller, doc: Deployment, workers: WorkerLimits) -> None:
        if doc.runpod.endpoint_id is None:
            raise ApiError(409, "invalid_state", "the deployment has no Runpod endpoint", details={"status": "none"})
        try:
            self._client(caller).update_endpoint(doc.runpod.endpoint_id, EndpointChange(workers=workers))
        except RunpodNotFoundError as exc:
            raise ApiError(409, "invalid_state", "the deployment's Runpod endpoint is gone") from exc
        except RunpodAuthError as exc:
            raise ApiError(401, "invalid_api_key", "Runpod does not accept this API key") from exc
        except (PermanentError, RetryableError) as exc:
            raise ApiError(
                503, "runpod_unavailable", f"Runpod did not take the change; try again: {exc}", headers=_RETRY
            ) from exc

    def _warm_up(self, caller: Caller, doc: Deployment) -> None:
        assert doc.runpod.endpoint_id is not None
        try:
            job = self._client(caller).run(doc.runpod.endpoint_id, {"warmup": True})
        except (PermanentError, RetryableError) as exc:
            raise ApiError(
                503, "runpod_unavailable", f"the warm-up job was not taken; try again: {exc}", headers=_RETRY
            ) from exc

        def record(d: Deployment) -> bool:
            if d.status not in _RESTARTING or d.runpod.warmup_job_id:
                return False
            d.runpod.warmup_job_id = job.id
            return True

        self._deps.store.update(doc.deployment_id, record, message="submitted the warm-up job; waiting for a worker")

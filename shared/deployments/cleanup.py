"""cleanup: tear a deployment down on ``deployment-delete-requested`` and move it to ``deleted``.

Order matters for retries: Runpod first (with the sealed key), then the credentials and callback secret are
erased, then the status moves. A retry after any step finds less to do; with the credentials already erased the
Runpod part was done. Whatever provisioning creates after this ran, provisioning removes itself (it re-checks the
status before recording each resource).

A deployment being deleted never fails: a Runpod refusal during the teardown (quota, a rejected call) is retried
like an outage. Sealed credentials that do not open end the delete with an honest ``deleted`` that names what
could not be removed (docs/decisions/2026-11-unreadable-credentials.md).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from shared.deployments.deps import StepDeps
from shared.deployments.endpoint_spec import resource_name
from shared.deployments.teardown import NOT_REMOVED, release
from shared.document import Deployment
from shared.errors import DeploymentNotFoundError, IllegalTransitionError, PermanentError, RetryableError
from shared.lifecycle import Status
from shared.messages import DeploymentDeleteRequested
from shared.store import utcnow

logger = logging.getLogger(__name__)


def cleanup(message: DeploymentDeleteRequested, deps: StepDeps) -> str:
    """Tear down, erase secrets, mark deleted; idempotent. RetryableError while Runpod or Firestore fail."""
    deployment_id = message.deployment_id
    doc = deps.store.get(deployment_id)
    if doc is None:
        deps.store.erase_secrets(deployment_id)
        return "no such deployment"
    if doc.status is Status.DELETED:
        deps.store.erase_secrets(deployment_id)
        return "deleted already"
    if doc.status is not Status.DELETING:
        with contextlib.suppress(IllegalTransitionError):
            deps.transitions.move(
                deployment_id, Status.DELETING, f"delete requested ({message.reason})", apply=_reason(message)
            )
    try:
        removed = release(deps, deployment_id, endpoint_id=doc.runpod.endpoint_id)
    except PermanentError as exc:
        # Failing it is refused (deleting -> failed), and the delete must still happen: retry, as for an outage.
        raise RetryableError(f"Runpod refused part of the teardown; will retry: {exc.message}") from exc
    deps.store.erase_secrets(deployment_id)
    note, level = ("deleted: Runpod resources removed, credentials erased", "info")
    if not removed:
        note, level = _not_removed(doc), "error"

    def record_deleted(d: Deployment) -> None:
        d.deleted_at = utcnow()
        _reason(message)(d)

    try:
        deps.transitions.move(deployment_id, Status.DELETED, note, apply=record_deleted, level=level)
    except (IllegalTransitionError, DeploymentNotFoundError):
        return "deleted meanwhile"
    return "deleted"


def _reason(message: DeploymentDeleteRequested) -> Callable[[Deployment], None]:
    """Records why it is deleted; the first reason wins (an orphan sweep is no reason of the deployment's own)."""

    def record(d: Deployment) -> None:
        if d.delete_reason is None and message.reason != "orphan":
            d.delete_reason = message.reason

    return record


def _not_removed(doc: Deployment) -> str:
    """The ``deleted`` message when the sealed credentials did not open: what may be left on Runpod."""
    if not doc.may_exist_on_runpod():
        return "deleted: nothing was created on Runpod, credentials erased"
    left = f"endpoint {doc.runpod.endpoint_id}" if doc.runpod.endpoint_id else "none recorded"
    return (
        f"deleted, but {NOT_REMOVED}: remove them in the Runpod console (named {resource_name(doc.deployment_id)}; "
        f"{left}); credentials erased"
    )

"""cleanup: tear a deployment down on ``deployment-delete-requested`` and move it to ``deleted``.

Order matters for retries: Runpod first (with the sealed key), then the credentials and callback secret are
erased, then the status moves. A retry after any step finds less to do; with the credentials already erased the
Runpod part was done. Whatever provisioning creates after this ran, provisioning removes itself (it re-checks the
status before recording each resource).
"""

from __future__ import annotations

import contextlib
import logging

from shared.errors import DeploymentNotFoundError, IllegalTransitionError
from shared.lifecycle import Status
from shared.messages import DeploymentDeleteRequested
from shared.steps.deps import StepDeps
from shared.steps.teardown import release
from shared.store import utcnow

logger = logging.getLogger(__name__)


def cleanup(message: DeploymentDeleteRequested, deps: StepDeps) -> str:
    """Tear down, erase secrets, mark deleted; idempotent. RetryableError while Runpod or Firestore fail."""
    deployment_id = message.deployment_id
    doc = deps.store.get(deployment_id)
    if doc is None:
        deps.store.erase_secrets(deployment_id)
        return "no such deployment"
    if doc["status"] == Status.DELETED.value:
        deps.store.erase_secrets(deployment_id)
        return "deleted already"
    if doc["status"] != Status.DELETING.value:
        with contextlib.suppress(IllegalTransitionError):
            deps.lifecycle.transition(deployment_id, Status.DELETING, f"delete requested ({message.reason})")
    release(deps, deployment_id, endpoint_id=doc.get("endpoint_id"))
    deps.store.erase_secrets(deployment_id)
    try:
        deps.lifecycle.transition(
            deployment_id,
            Status.DELETED,
            "deleted: Runpod resources removed, credentials erased",
            fields={"deleted_at": utcnow()},
        )
    except (IllegalTransitionError, DeploymentNotFoundError):
        return "deleted meanwhile"
    return "deleted"

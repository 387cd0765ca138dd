"""Teardown: remove what a deployment has on Runpod (REST v2), and fail a deployment (which tears it down).

``DELETE /v2/serverless/{id}`` terminates the endpoint's workers and cancels its jobs; a 404 means it is gone
already. A delete counts as done only once a ``GET`` of the endpoint answers 404. The endpoint is looked for by
id (recorded) and by name (an attempt that crashed between the create and the record left one unrecorded).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from shared.deployments.credentials import CredentialsUnreadableError
from shared.deployments.deps import StepDeps
from shared.deployments.endpoint_spec import is_resource_of
from shared.document import Deployment
from shared.errors import DeploymentNotFoundError, IllegalTransitionError, PermanentError, RetryableError
from shared.lifecycle import Status
from shared.runpod.client import RunpodClient
from shared.runpod.errors import RunpodAuthError, RunpodNotFoundError
from shared.store import utcnow

logger = logging.getLogger(__name__)

NOT_REMOVED = "the Runpod resources could not be removed: the sealed credentials do not open"
_TEARING_DOWN = {Status.FAILED, Status.DELETING}


@dataclass(frozen=True)
class TeardownReport:
    endpoints: tuple[str, ...]

    def describe(self) -> str:
        if not self.endpoints:
            return "nothing left on Runpod to remove"
        return "removed from Runpod: " + ", ".join(f"endpoint {e}" for e in self.endpoints)


def teardown(client: RunpodClient, deployment_id: str, endpoint_id: str | None = None) -> TeardownReport:
    """Delete the deployment's endpoint(s) and confirm each is gone.

    Raises:
        RetryableError: Runpod failed, or an endpoint still answers after its delete.
    """
    ids = {e.id for e in client.list_endpoints() if is_resource_of(e.name, deployment_id)}
    if endpoint_id:
        ids.add(endpoint_id)
    removed = []
    for found in sorted(ids):
        with contextlib.suppress(RunpodNotFoundError):
            client.delete_endpoint(found)
            removed.append(found)
        if _still_there(client, found):
            raise RetryableError(f"Runpod endpoint {found} still answers after its delete")
    return TeardownReport(tuple(removed))


def _still_there(client: RunpodClient, endpoint_id: str) -> bool:
    try:
        client.get_endpoint(endpoint_id)
    except RunpodNotFoundError:
        return False
    return True


def release(deps: StepDeps, deployment_id: str, api_key: str | None = None, endpoint_id: str | None = None) -> bool:
    """Tear down with the deployment's key (given, or from its sealed credentials) and note it on the document.

    Without a key (credentials erased) there is nothing we can reach. A refused key cannot have created anything
    that another key could remove, so that also ends the teardown.

    Returns:
        False when the sealed credentials do not open: nothing was removed (the document's event log says so).
    """
    try:
        credentials = None if api_key else deps.credentials(deployment_id)
    except CredentialsUnreadableError:
        logger.error("teardown impossible: %s", NOT_REMOVED)
        with contextlib.suppress(DeploymentNotFoundError):
            deps.store.update(deployment_id, lambda doc: doc.status in _TEARING_DOWN, message=NOT_REMOVED)
        return False
    key = api_key or (credentials.runpod_api_key if credentials else None)
    if key is None:
        return True
    try:
        report = teardown(deps.runpod.client(key), deployment_id, endpoint_id)
    except RunpodAuthError:
        logger.warning("teardown skipped: Runpod refuses the deployment's key")
        report = TeardownReport(())
    logger.info(report.describe())

    def note_torn_down(doc: Deployment) -> bool:
        if doc.status not in _TEARING_DOWN:
            return False
        doc.runpod.torn_down_at = utcnow()
        return True

    with contextlib.suppress(DeploymentNotFoundError):
        deps.store.update(deployment_id, note_torn_down, message=report.describe())
    return True


def fail_deployment(
    deps: StepDeps, deployment_id: str, reason: str, message: str, api_key: str | None = None
) -> Deployment | None:
    """Move to ``failed`` with ``reason`` (the first reason wins) and tear down. Returns the document, if any."""
    doc = None
    try:
        doc = deps.transitions.fail(deployment_id, reason, message).document
    except IllegalTransitionError:
        logger.info("not marked failed (%s): the deployment is being deleted; tearing down anyway", reason)
    except DeploymentNotFoundError:
        return None
    if doc is not None and not doc.may_exist_on_runpod():
        # A missing model, say: the user's Runpod key is not used at all (not even to look for resources).
        logger.info("nothing to tear down: the deployment failed before anything was created on Runpod")
        return doc
    release(deps, deployment_id, api_key, doc.runpod.endpoint_id if doc else None)
    return doc


def deployment_failer(deps: StepDeps) -> Callable[[str, PermanentError], None]:
    """What the delivery adapter does with a step's PermanentError: the deployment fails with its reason, and is
    torn down (shared.delivery)."""

    def fail(deployment_id: str, exc: PermanentError) -> None:
        fail_deployment(deps, deployment_id, exc.reason, exc.message)

    return fail

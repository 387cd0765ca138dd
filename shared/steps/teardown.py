"""Teardown, shared by every failure path and by DELETE: scale to 0/0, delete the endpoint, delete the template.

Each call is idempotent: what is gone already is fine. Resources are found by id and by their deterministic name,
so a template or endpoint that provisioning created after a delete arrived is removed too.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from shared.crypto import UnsealError
from shared.deployments import Lifecycle
from shared.errors import DeploymentNotFoundError, IllegalTransitionError, PermanentError
from shared.lifecycle import FailureReason, Status
from shared.models import SealedCredentials
from shared.runpod.client import Endpoint, RunpodClient
from shared.runpod.errors import RunpodAuthError, RunpodNotFoundError
from shared.steps.deps import StepDeps, is_resource_of
from shared.store import utcnow

logger = logging.getLogger(__name__)

_MAX_ERROR_MESSAGE = 500
NOT_REMOVED = "the Runpod resources could not be removed: the sealed credentials do not open"


class CredentialsUnreadableError(PermanentError):
    """The sealed credentials do not open (the sealing key was rotated, or the blob is corrupt): nothing can reach
    Runpod for this deployment any more, and no retry changes that."""

    def __init__(self) -> None:
        super().__init__(
            FailureReason.INTERNAL.value,
            "the sealed credentials do not open (was the sealing key rotated?): Runpod cannot be reached",
        )


@dataclass(frozen=True)
class TeardownReport:
    endpoints: tuple[str, ...]
    templates: tuple[str, ...]

    def describe(self) -> str:
        if not self.endpoints and not self.templates:
            return "nothing left on Runpod to remove"
        parts = [f"endpoint {e}" for e in self.endpoints] + [f"template {t}" for t in self.templates]
        return "removed from Runpod: " + ", ".join(parts)


def teardown(client: RunpodClient, deployment_id: str, endpoint_id: str | None = None) -> TeardownReport:
    """Remove the deployment's endpoint(s) and template from the account (RetryableError if Runpod fails)."""
    endpoints, templates = client.resources()
    removed_endpoints = []
    for endpoint in endpoints:
        if endpoint.id != endpoint_id and not is_resource_of(endpoint.name, deployment_id):
            continue
        with contextlib.suppress(RunpodNotFoundError):
            remove_endpoint(client, endpoint)
            removed_endpoints.append(endpoint.id)
    removed_templates = []
    for template in templates:
        if is_resource_of(template.name, deployment_id):
            with contextlib.suppress(RunpodNotFoundError):
                client.delete_template(template.name)
                removed_templates.append(template.id)
    return TeardownReport(tuple(removed_endpoints), tuple(removed_templates))


def remove_endpoint(client: RunpodClient, endpoint: Endpoint) -> None:
    """Scale an endpoint to 0/0 and delete it (Runpod deletes an endpoint only at 0/0)."""
    if endpoint.workers_min or endpoint.workers_max:
        # saveEndpoint replaces the whole config, so send it all.
        client.save_endpoint(endpoint.as_spec().model_copy(update={"workers_min": 0, "workers_max": 0}), endpoint.id)
    client.delete_endpoint(endpoint.id)


def may_exist_on_runpod(doc: dict[str, Any]) -> bool:
    """Whether the deployment ever reached ``creating_endpoint``; before it, nothing of it exists on Runpod."""
    return Status.CREATING_ENDPOINT.value in (doc.get("phase_timestamps") or {})


def release(deps: StepDeps, deployment_id: str, api_key: str | None = None, endpoint_id: str | None = None) -> bool:
    """Tear down with the deployment's key (given, or from its sealed credentials) and note it on the document.

    Without a key (credentials erased) there is nothing we can reach. A refused key cannot have created anything
    that another key could remove, so that also ends the teardown.

    Returns:
        False when the sealed credentials do not open: nothing was removed (the document's event log says so).
    """
    try:
        key = api_key or runpod_key(deps, deployment_id)
    except CredentialsUnreadableError:
        logger.error("teardown impossible: %s", NOT_REMOVED)
        with contextlib.suppress(DeploymentNotFoundError):
            deps.store.update_if_status(deployment_id, {Status.FAILED, Status.DELETING}, {}, message=NOT_REMOVED)
        return False
    if key is None:
        return True
    try:
        report = teardown(deps.runpod.client(key), deployment_id, endpoint_id)
    except RunpodAuthError:
        logger.warning("teardown skipped: Runpod refuses the deployment's key")
        report = TeardownReport((), ())
    logger.info(report.describe())
    with contextlib.suppress(DeploymentNotFoundError):
        deps.store.update_if_status(
            deployment_id, {Status.FAILED, Status.DELETING}, {"torn_down_at": utcnow()}, message=report.describe()
        )
    return True


def runpod_key(deps: StepDeps, deployment_id: str) -> str | None:
    """The user's Runpod key from the sealed credentials; None once they are erased (deleted).

    Raises:
        CredentialsUnreadableError: they do not open.
    """
    credentials = open_credentials(deps, deployment_id)
    return credentials.runpod_api_key if credentials else None


def open_credentials(deps: StepDeps, deployment_id: str) -> SealedCredentials | None:
    """The deployment's sealed credentials, opened; None once they are erased (deleted).

    Raises:
        CredentialsUnreadableError: they do not open.
    """
    secrets = deps.store.secrets(deployment_id)
    if not secrets or not secrets.get("sealed"):
        return None
    try:
        return deps.sealer.open(deployment_id, secrets["sealed"])
    except UnsealError:
        raise CredentialsUnreadableError() from None


def fail_deployment(
    deps: StepDeps, deployment_id: str, reason: str, message: str, api_key: str | None = None
) -> dict[str, Any] | None:
    """Move to ``failed`` with ``reason`` (the first reason wins) and tear down. Returns the document, if any."""
    message = message[:_MAX_ERROR_MESSAGE]
    doc = None
    try:
        doc = fail_transition(deps.lifecycle, deployment_id, reason, message)
    except IllegalTransitionError:
        logger.info("not marked failed (%s): the deployment is being deleted; tearing down anyway", reason)
    except DeploymentNotFoundError:
        return None
    if doc is not None and not may_exist_on_runpod(doc):
        # A missing model, say: the user's Runpod key is not used at all (not even to look for resources).
        logger.info("nothing to tear down: the deployment failed before anything was created on Runpod")
        return doc
    release(deps, deployment_id, api_key, (doc or {}).get("endpoint_id"))
    return doc


def fail_transition(lifecycle: Lifecycle, deployment_id: str, reason: str, message: str) -> dict[str, Any]:
    result = lifecycle.transition(
        deployment_id,
        Status.FAILED,
        f"failed ({reason}): {message}",
        fields={"error": {"code": reason, "message": message}},
        level="error",
    )
    logger.warning("deployment failed: %s", reason, extra={"fields": {"reason": reason}})
    return result.document

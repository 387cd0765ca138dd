"""A deployment's sealed credentials (the user's Runpod key, HF token, private cache keys), opened on demand.

They live in the server-only ``deployment_secrets`` collection, sealed with the key from Secret Manager, and are
erased when the deployment is deleted: "erased" (None) means there is nothing left we may reach Runpod with.
"""

from __future__ import annotations

from shared.crypto import Sealer, UnsealError
from shared.errors import PermanentError
from shared.lifecycle import FailureReason
from shared.models import SealedCredentials
from shared.store import DeploymentStore


class CredentialsUnreadableError(PermanentError):
    """The sealed credentials do not open (the sealing key was rotated, or the blob is corrupt): nothing can reach
    Runpod for this deployment any more, and no retry changes that."""

    def __init__(self) -> None:
        super().__init__(
            FailureReason.INTERNAL.value,
            "the sealed credentials do not open (was the sealing key rotated?): Runpod cannot be reached",
        )


def open_credentials(store: DeploymentStore, sealer: Sealer, deployment_id: str) -> SealedCredentials | None:
    """The deployment's credentials, opened; None once they are erased (deleted).

    Raises:
        CredentialsUnreadableError: they do not open.
    """
    secrets = store.secrets(deployment_id)
    if not secrets or not secrets.get("sealed"):
        return None
    try:
        return sealer.open(deployment_id, secrets["sealed"])
    except UnsealError:
        raise CredentialsUnreadableError() from None


def callback_secret(store: DeploymentStore, sealer: Sealer, deployment_id: str) -> str:
    """The worker's callback secret, derived again from its stored nonce (only the nonce and a hash are stored)."""
    secrets = store.secrets(deployment_id) or {}
    return sealer.callback_secret(deployment_id, str(secrets.get("callback_nonce", "")))

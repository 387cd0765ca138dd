"""What a create reads and writes in its one round trip and its one commit (shared.store.DeploymentStore.create)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.document import Deployment


@dataclass(frozen=True)
class NewDeployment:
    """Everything one POST writes, committed together."""

    document: Deployment
    sealed_credentials: bytes
    callback_nonce: str
    callback_secret_hash: str
    idempotency_key: str | None = None
    idempotency_record: dict[str, Any] | None = None
    # The update_time of an expired record under the same key that this create replaces (TTL may not have run yet).
    replaces_expired_record: datetime | None = None


@dataclass(frozen=True)
class IdempotencyRecord:
    data: dict[str, Any]
    update_time: datetime


@dataclass(frozen=True)
class TenantCounts:
    """What a tenant holds now (``tenant_limits/{tenant}``): live deployments and the sum of their ``workers_min``.

    ``update_time`` is the counter document's (None: it does not exist yet); a create commits only if the counter
    did not change since it was read, so two parallel creates can never both pass a cap.
    """

    live: int = 0
    workers_min: int = 0
    update_time: datetime | None = None


@dataclass(frozen=True)
class BeforeCreate:
    """What a create reads in one round trip before it decides."""

    rate_count: int
    record: IdempotencyRecord | None
    tenant: TenantCounts

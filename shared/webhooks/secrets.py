"""Per-tenant webhook signing secrets (Standard Webhooks ``whsec_<base64>``), sealed at rest in Firestore.

``webhook_secrets/{tenant}`` (server-only) holds the sealed current secret, when it was made, and during a rotation
the sealed previous secret with ``previous_valid_until``: until then both sign every delivery (two signatures in
``webhook-signature``), after it only the current one. A rotation during an overlap drops the older previous secret.
The secret is created on first use (``GET /v1/webhook-secret`` or the first delivery), create-if-absent, so two first
calls agree on one secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from google.cloud import firestore

from shared.conditional import until_written
from shared.crypto import Sealer
from shared.signing import new_secret
from shared.store import utcnow

WEBHOOK_SECRETS = "webhook_secrets"


@dataclass(frozen=True)
class TenantSecret:
    secret: str
    created_at: datetime
    previous: str | None = None
    previous_valid_until: datetime | None = None

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets that sign a delivery at ``now``: the current one, and the previous one within its overlap."""
        secrets = [self.secret]
        if self.previous and self.previous_valid_until and now < self.previous_valid_until:
            secrets.append(self.previous)
        return secrets


class WebhookSecrets:
    def __init__(self, db: firestore.Client, sealer: Sealer, overlap_s: float) -> None:
        self._db = db
        self._sealer = sealer
        self._overlap = timedelta(seconds=overlap_s)

    def _ref(self, tenant: str) -> Any:
        return self._db.collection(WEBHOOK_SECRETS).document(tenant)

    def _context(self, tenant: str) -> str:
        return f"webhook-secret:{tenant}"

    def _read(self, tenant: str, data: dict[str, Any]) -> TenantSecret:
        context = self._context(tenant)
        previous = data.get("sealed_previous")
        return TenantSecret(
            secret=self._sealer.open_text(context, data["sealed_secret"]),
            created_at=data["created_at"],
            previous=self._sealer.open_text(context, previous) if previous else None,
            previous_valid_until=data.get("previous_valid_until"),
        )

    def get_or_create(self, tenant: str) -> TenantSecret:
        """The tenant's secret, made now if it has none."""
        ref = self._ref(tenant)

        def attempt() -> TenantSecret:
            snap = ref.get()
            if snap.exists:
                return self._read(tenant, snap.to_dict() or {})
            now = utcnow()
            secret = new_secret()
            # A conflict: a concurrent first call made one, and the next attempt reads it.
            ref.create({"sealed_secret": self._sealer.seal_text(self._context(tenant), secret), "created_at": now})
            return TenantSecret(secret=secret, created_at=now)

        return until_written(attempt, "the webhook secret")

    def rotate(self, tenant: str) -> TenantSecret:
        """A new current secret; the one it replaces keeps signing for the overlap (24 h by default)."""
        ref = self._ref(tenant)

        def attempt() -> TenantSecret:
            snap = ref.get()
            now = utcnow()
            secret = new_secret()
            context = self._context(tenant)
            record: dict[str, Any] = {"sealed_secret": self._sealer.seal_text(context, secret), "created_at": now}
            if not snap.exists:
                ref.create(record | {"sealed_previous": None, "previous_valid_until": None})
                return TenantSecret(secret=secret, created_at=now)
            old = snap.to_dict() or {}
            until = now + self._overlap
            record |= {"sealed_previous": old["sealed_secret"], "previous_valid_until": until}
            ref.update(record, option=self._db.write_option(last_update_time=snap.update_time))
            previous = self._sealer.open_text(context, old["sealed_secret"])
            return TenantSecret(secret=secret, created_at=now, previous=previous, previous_valid_until=until)

        return until_written(attempt, "the webhook secret")

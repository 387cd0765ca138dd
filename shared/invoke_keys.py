"""Per-deployment invoke keys (``vdk_...``): what an app holds instead of the account-wide Runpod key.

- A key is ``vdk_<key id>_<secret>``; only the SHA-256 of the whole key is stored (server-only ``invoke_keys``
  collection, by key id), so it is shown once, at creation. The secret is 256 random bits: a plain hash suffices
  (nothing to brute-force), and the key id makes the check one document read.
- A key opens the run, runsync and jobs routes of its one deployment and ``GET /v1/deployments/{id}``; the Runpod
  key stays sealed and is opened server-side for those calls.
- Revocation deletes the document: the next request with that key is refused (nothing caches a good verdict).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime

from google.cloud import firestore
from pydantic import BaseModel

INVOKE_KEYS = "invoke_keys"
PREFIX = "vdk_"
KEY_ID_PATTERN = "[0-9a-f]{16}"
_KEY = re.compile(rf"^vdk_(?P<key_id>{KEY_ID_PATTERN})_(?P<secret>[A-Za-z0-9_-]{{43}})$")
SHOWN_PREFIX_CHARS = 12


def is_invoke_key(token: str) -> bool:
    return token.startswith(PREFIX)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class InvokeKey(BaseModel):
    """A stored key, without the key: what ``GET /v1/deployments/{id}/keys`` lists."""

    key_id: str
    deployment_id: str
    prefix: str
    created_at: datetime


class StoredInvokeKey(InvokeKey):
    owner: str
    hash: str


class InvokeKeyStore:
    def __init__(self, client: firestore.Client) -> None:
        self._db = client

    def create(self, deployment_id: str, owner: str) -> tuple[InvokeKey, str]:
        """A new key for the deployment: its record and the key itself (shown once, never stored)."""
        key_id = secrets.token_hex(8)
        key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        stored = StoredInvokeKey(
            key_id=key_id,
            deployment_id=deployment_id,
            prefix=key[:SHOWN_PREFIX_CHARS],
            created_at=datetime.now(UTC),
            owner=owner,
            hash=key_hash(key),
        )
        self._db.collection(INVOKE_KEYS).document(key_id).create(stored.model_dump())
        return InvokeKey.model_validate(stored.model_dump()), key

    def resolve(self, key: str) -> StoredInvokeKey | None:
        """The live key this string is, or None (malformed, unknown, revoked, or a wrong secret)."""
        match = _KEY.fullmatch(key)
        if match is None:
            return None
        snap = self._db.collection(INVOKE_KEYS).document(match["key_id"]).get()
        if not snap.exists:
            return None
        stored = StoredInvokeKey.model_validate(snap.to_dict())
        return stored if hmac.compare_digest(stored.hash, key_hash(key)) else None

    def list(self, deployment_id: str) -> list[InvokeKey]:
        query = self._db.collection(INVOKE_KEYS).where(
            filter=firestore.FieldFilter("deployment_id", "==", deployment_id)
        )
        keys = [InvokeKey.model_validate(snap.to_dict()) for snap in query.stream()]
        return sorted(keys, key=lambda k: (k.created_at, k.key_id))

    def revoke(self, deployment_id: str, key_id: str) -> bool:
        """Delete the key if it belongs to the deployment; whether it did."""
        ref = self._db.collection(INVOKE_KEYS).document(key_id)
        snap = ref.get()
        if not snap.exists or (snap.to_dict() or {}).get("deployment_id") != deployment_id:
            return False
        ref.delete(option=self._db.write_option(last_update_time=snap.update_time))
        return True

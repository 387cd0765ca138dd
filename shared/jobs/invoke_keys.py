"""Per-deployment invoke keys (``vdk_...``): what an app holds instead of the account-wide Runpod key.

- A key is ``vdk_<key id>_<secret>``; only the SHA-256 of the whole key is stored (server-only ``invoke_keys``
  collection, by key id), so it is shown once, at creation. The secret is 256 random bits: a plain hash suffices
  (nothing to brute-force), and the key id makes the check one document read.
- A key opens the run, runsync and jobs routes of its one deployment and ``GET /v1/deployments/{id}``; the Runpod
  key stays sealed and is opened server-side for those calls.
- Revocation deletes the document: the next request with that key is refused (nothing caches a good verdict).
- ``MAX_INVOKE_KEYS_PER_DEPLOYMENT`` holds in the write: a counter per deployment (``invoke_key_counts``) is raised
  in the key's own commit on condition that it did not change since it was read, and lowered in the revocation's;
  parallel creates cannot pass it together (docs/decisions/2026-12-tenant-limits.md).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime

from google.api_core import exceptions as gexc
from google.cloud import firestore
from pydantic import BaseModel

from shared.conditional import until_written
from shared.store import INVOKE_KEY_COUNTS, INVOKE_KEYS

_CREATE_ATTEMPTS = 64
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


class TooManyInvokeKeysError(Exception):
    """The deployment has its limit of live invoke keys already."""


class InvokeKeyStore:
    def __init__(self, client: firestore.Client) -> None:
        self._db = client

    def create(self, deployment_id: str, owner: str, limit: int) -> tuple[InvokeKey, str]:
        """A new key for the deployment: its record and the key itself (shown once, never stored).

        Raises:
            TooManyInvokeKeysError: the deployment has ``limit`` live keys.
            RetryableError: parallel creates kept changing the count.
        """
        counter = self._db.collection(INVOKE_KEY_COUNTS).document(deployment_id)

        def attempt() -> tuple[InvokeKey, str]:
            snap = counter.get()
            # A deployment whose keys predate the counter starts from what exists.
            live = int((snap.to_dict() or {}).get("live", 0)) if snap.exists else len(self.list(deployment_id))
            if live >= limit:
                raise TooManyInvokeKeysError(deployment_id)
            record, key = self._new(deployment_id, owner)
            batch = self._db.batch()
            batch.create(self._db.collection(INVOKE_KEYS).document(record.key_id), record.model_dump())
            if snap.exists:
                option = self._db.write_option(last_update_time=snap.update_time)
                batch.update(counter, {"live": live + 1}, option=option)
            else:
                batch.create(counter, {"live": live + 1})
            batch.commit()  # a conflict: another create (or a revocation) changed the count, read it again
            return InvokeKey.model_validate(record.model_dump()), key

        return until_written(attempt, f"the invoke keys of {deployment_id}", attempts=_CREATE_ATTEMPTS)

    @staticmethod
    def _new(deployment_id: str, owner: str) -> tuple[StoredInvokeKey, str]:
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
        return stored, key

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
        counter = self._db.collection(INVOKE_KEY_COUNTS).document(deployment_id)
        snaps = {snap.reference.path: snap for snap in self._db.get_all([ref, counter])}
        snap = snaps[ref.path]
        if not snap.exists or (snap.to_dict() or {}).get("deployment_id") != deployment_id:
            return False
        batch = self._db.batch()
        batch.delete(ref, option=self._db.write_option(last_update_time=snap.update_time))
        if snaps[counter.path].exists:  # the delete's precondition makes this count once
            batch.update(counter, {"live": firestore.Increment(-1)})
        try:
            batch.commit()
        except (gexc.FailedPrecondition, gexc.NotFound):
            return False  # revoked meanwhile by another request
        return True

"""The server-only records beside the deployments: Runpod's verdicts on API keys, rate-limit windows, the API's
request counters, the signed worker reports already taken, and the purge of what expired. Clients never read them
(firestore.rules); :class:`shared.store.DeploymentStore` serves them with the deployments."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, datetime

from google.api_core import exceptions as gexc
from google.cloud import firestore

RATE_LIMITS = "rate_limits"
REQUEST_COUNTERS = "request_counters"
KEY_VERDICTS = "key_verdicts"
# The webhook-ids of the signed worker reports taken in the last tolerance window (replays are refused).
SEEN_REPORTS = "seen_reports"
REQUEST_COUNTER_SHARDS = 8
COUNTER_WRITE_TIMEOUT_S = 5.0
_BATCH_WRITES = 400  # under Firestore's 500 writes per commit


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class KeyVerdict:
    """Whether Runpod accepts a tenant's key, until ``expires_at`` (a Firestore TTL policy removes old ones)."""

    valid: bool
    expires_at: datetime
    checked_at: datetime | None = None  # when Runpod gave it (None: a record from before it was kept)


class ServerRecords:
    """The records' reads and writes; ``_db`` is the Firestore client of the store that serves them."""

    _db: firestore.Client

    def key_verdict(self, tenant: str) -> KeyVerdict | None:
        """The remembered verdict on a tenant's key, unless it expired."""
        snap = self._db.collection(KEY_VERDICTS).document(tenant).get()
        data = snap.to_dict() if snap.exists else None
        if not data or data["expires_at"] <= utcnow():
            return None
        return KeyVerdict(valid=bool(data["valid"]), expires_at=data["expires_at"], checked_at=data.get("checked_at"))

    def record_key_verdict(self, tenant: str, verdict: KeyVerdict) -> None:
        self._db.collection(KEY_VERDICTS).document(tenant).set(
            {"valid": verdict.valid, "checked_at": verdict.checked_at or utcnow(), "expires_at": verdict.expires_at}
        )

    def count_in_window(self, key: str) -> int:
        """The count of a counter document (0 when absent)."""
        snap = self._db.collection(RATE_LIMITS).document(key).get()
        return int((snap.to_dict() or {}).get("count", 0)) if snap.exists else 0

    def increment_window(self, key: str, expires_at: datetime) -> int:
        """Atomically add one to a counter document and return the new value (no transaction, no contention)."""
        ref = self._db.collection(RATE_LIMITS).document(key)
        result = ref.set({"count": firestore.Increment(1), "expires_at": expires_at}, merge=True)
        return int(result.transform_results[0].integer_value)

    def add_request_counts(self, counts: dict[str, int]) -> None:
        """Fold request counts into one of the fixed shards (spread, so no one document takes every instance's writes).

        No retries: a failed write is the caller's to keep and try again, and the exit-time flush must not hang.
        """
        if counts:
            ref = self._db.collection(REQUEST_COUNTERS).document(f"shard-{random.randrange(REQUEST_COUNTER_SHARDS)}")
            increments = {"counts": {k: firestore.Increment(v) for k, v in counts.items()}}
            ref.set(increments, merge=True, retry=None, timeout=COUNTER_WRITE_TIMEOUT_S)

    def request_counts(self) -> dict[str, int]:
        """The request counters summed over the shards (one round trip)."""
        refs = [self._db.collection(REQUEST_COUNTERS).document(f"shard-{n}") for n in range(REQUEST_COUNTER_SHARDS)]
        totals: dict[str, int] = {}
        for snap in self._db.get_all(refs):
            for key, value in ((snap.to_dict() or {}).get("counts") or {}).items():
                totals[key] = totals.get(key, 0) + int(value)
        return totals

    def remember_report(self, deployment_id: str, msg_id: str, expires_at: datetime) -> bool:
        """Record a signed report's ``webhook-id`` for the deployment, if absent (a create: two copies arriving
        together cannot both pass). Whether it was new."""
        try:
            self._db.collection(SEEN_REPORTS).document(_report_key(deployment_id, msg_id)).create(
                {"deployment_id": deployment_id, "seen_at": utcnow(), "expires_at": expires_at}
            )
        except gexc.AlreadyExists:
            return False
        return True

    def forget_report(self, deployment_id: str, msg_id: str) -> None:
        """Drop a report's record again (its effect failed to apply: the worker's retry must be taken)."""
        self._db.collection(SEEN_REPORTS).document(_report_key(deployment_id, msg_id)).delete()

    def purge_expired(self, collection: str, now: datetime, limit: int) -> int:
        """Delete up to ``limit`` records of ``collection`` whose ``expires_at`` passed (where no TTL policy runs:
        the emulator, or before the policy's own sweep). Returns how many went."""
        query = self._db.collection(collection).where(filter=firestore.FieldFilter("expires_at", "<", now))
        snaps = list(query.limit(limit).stream())
        for start in range(0, len(snaps), _BATCH_WRITES):
            batch = self._db.batch()
            for snap in snaps[start : start + _BATCH_WRITES]:
                batch.delete(snap.reference)
            batch.commit()
        return len(snaps)


def _report_key(deployment_id: str, msg_id: str) -> str:
    """A document id for any signed id (which may hold '/' or be long): a hash of both."""
    return hashlib.sha256(f"{deployment_id}\n{msg_id}".encode()).hexdigest()

"""The Firestore store: deployments, their event logs, sealed credentials, idempotency and rate-limit records.

Status changes are read-check-write with an ``update_time`` precondition (retried on conflict), not transactions:
the emulator punishes contended transactions with ~2 s lock waits, and production Firestore gives the same
guarantee for a single document either way. Creation is one batch with create-if-absent preconditions, so a
POST is one commit and concurrent duplicates collide instead of doubling.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from shared.errors import DeploymentNotFoundError, IllegalTransitionError, RetryableError
from shared.lifecycle import Status, can_transition

DEPLOYMENTS = "deployments"
EVENTS = "events"
SECRETS = "deployment_secrets"
IDEMPOTENCY = "idempotency_keys"
RATE_LIMITS = "rate_limits"
REQUEST_COUNTERS = "request_counters"

_PRECONDITION_RETRIES = 8
PING_TIMEOUT_S = 3.0
REQUEST_COUNTER_SHARDS = 8
COUNTER_WRITE_TIMEOUT_S = 5.0


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class TransitionResult:
    """``changed`` is False for a repeated identical transition (a no-op)."""

    changed: bool
    previous: Status
    document: dict[str, Any]


@dataclass(frozen=True)
class NewDeployment:
    """Everything one POST writes, committed together."""

    document: dict[str, Any]
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


class DeploymentStore:
    """Firestore access for deployments. Clients are built once per instance and passed in."""

    def __init__(self, client: firestore.Client, event_log_max_lines: int = 200) -> None:
        self._db = client
        self._max_lines = event_log_max_lines

    # --- creation and reads -------------------------------------------------------------------------------------

    def read_before_create(self, rate_key: str, idempotency_key: str | None) -> tuple[int, IdempotencyRecord | None]:
        """The count so far in the tenant's rate window and the idempotency record, in one round trip."""
        rate_ref = self._db.collection(RATE_LIMITS).document(rate_key)
        refs = [rate_ref]
        if idempotency_key:
            refs.append(self._db.collection(IDEMPOTENCY).document(idempotency_key))
        count, record = 0, None
        for snap in self._db.get_all(refs):
            if not snap.exists:
                continue
            if snap.reference.path == rate_ref.path:
                count = int((snap.to_dict() or {}).get("count", 0))
            else:
                record = IdempotencyRecord(snap.to_dict() or {}, snap.update_time)
        return count, record

    def create(self, new: NewDeployment, counter: tuple[str, datetime] | None = None) -> None:
        """Write the document, its first log line, sealed credentials and the idempotency record in one commit.

        ``counter`` (rate-limit key, expiry) is incremented in the same commit.

        Raises:
            google.api_core.exceptions.AlreadyExists: the idempotency key (or the id) exists already.
            google.api_core.exceptions.FailedPrecondition: the expired record it replaces changed (or went) meanwhile.
        """
        doc = new.document
        deployment_id = doc["deployment_id"]
        ref = self._db.collection(DEPLOYMENTS).document(deployment_id)
        batch = self._db.batch()
        if new.idempotency_key and new.idempotency_record is not None:
            key_ref = self._db.collection(IDEMPOTENCY).document(new.idempotency_key)
            if new.replaces_expired_record is None:
                batch.create(key_ref, new.idempotency_record)
            else:  # every field is rewritten, so nothing of the expired record survives
                option = self._db.write_option(last_update_time=new.replaces_expired_record)
                batch.update(key_ref, new.idempotency_record, option=option)
        batch.create(ref, {**doc, "event_seq": 1})
        batch.create(
            ref.collection(EVENTS).document(_line_id(1)), _line("info", "deployment accepted", doc["created_at"])
        )
        batch.create(
            self._db.collection(SECRETS).document(deployment_id),
            {
                "owner": doc["owner"],
                "sealed": new.sealed_credentials,
                "callback_nonce": new.callback_nonce,
                "callback_secret_hash": new.callback_secret_hash,
            },
        )
        if counter is not None:
            key, expires_at = counter
            batch.set(
                self._db.collection(RATE_LIMITS).document(key),
                {"count": firestore.Increment(1), "expires_at": expires_at},
                merge=True,
            )
        batch.commit()

    def discard(self, deployment_id: str) -> None:
        """Undo :meth:`create` (a request that could not be handed on), so nothing is half-written."""
        ref = self._db.collection(DEPLOYMENTS).document(deployment_id)
        batch = self._db.batch()
        batch.delete(ref.collection(EVENTS).document(_line_id(1)))
        batch.delete(ref)
        batch.delete(self._db.collection(SECRETS).document(deployment_id))
        batch.commit()

    def get(self, deployment_id: str) -> dict[str, Any] | None:
        snap = self._db.collection(DEPLOYMENTS).document(deployment_id).get()
        return snap.to_dict() if snap.exists else None

    def get_idempotency_record(self, key: str) -> IdempotencyRecord | None:
        snap = self._db.collection(IDEMPOTENCY).document(key).get()
        return IdempotencyRecord(snap.to_dict() or {}, snap.update_time) if snap.exists else None

    def list_by_owner(
        self, owner: str, status: Status | None, limit: int, page_token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first, cursor-paginated; the token is opaque to clients."""
        query = self._db.collection(DEPLOYMENTS).where(filter=firestore.FieldFilter("owner", "==", owner))
        if status is not None:
            query = query.where(filter=firestore.FieldFilter("status", "==", status.value))
        query = query.order_by("created_at", direction=firestore.Query.DESCENDING).order_by(
            "deployment_id", direction=firestore.Query.DESCENDING
        )
        if page_token:
            created_at, last_id = decode_page_token(page_token)
            query = query.start_after({"created_at": created_at, "deployment_id": last_id})
        docs = [snap.to_dict() for snap in query.limit(limit + 1).stream()]
        page = [d for d in docs[:limit] if d]
        next_token = encode_page_token(page[-1]) if len(docs) > limit and page else None
        return page, next_token

    def counts_by_status(self, owner: str | None) -> dict[str, int]:
        """Count aggregation per status (server-side; nothing is downloaded)."""
        counts: dict[str, int] = {}
        for status in Status:
            query = self._db.collection(DEPLOYMENTS).where(filter=firestore.FieldFilter("status", "==", status.value))
            if owner is not None:
                query = query.where(filter=firestore.FieldFilter("owner", "==", owner))
            result: Any = query.count().get()  # type: ignore[call-arg]  # the stubs mistake get() for unbound
            counts[status.value] = int(result[0][0].value)
        return counts

    def events(self, deployment_id: str) -> list[dict[str, Any]]:
        lines = self._db.collection(DEPLOYMENTS).document(deployment_id).collection(EVENTS).order_by("__name__")
        return [snap.to_dict() or {} for snap in lines.stream()]

    def ping(self) -> None:
        """A cheap read that proves Firestore answers, failing fast (no retries) when it does not.

        Raises:
            RetryableError: Firestore did not answer within :data:`PING_TIMEOUT_S`.
        """
        try:
            self._db.collection(DEPLOYMENTS).document("_health").get(retry=None, timeout=PING_TIMEOUT_S)
        except gexc.GoogleAPICallError as exc:
            raise RetryableError(f"Firestore did not answer: {exc}") from exc

    # --- state changes --------------------------------------------------------------------------------------------

    def transition(
        self,
        deployment_id: str,
        to: Status,
        message: str,
        fields: dict[str, Any] | None = None,
        level: str = "info",
    ) -> TransitionResult:
        """Move a deployment to ``to`` if the state machine allows it; a repeat of the current status is a no-op.

        Raises:
            DeploymentNotFoundError: no such deployment.
            IllegalTransitionError: the move is refused (e.g. backwards, or out of a terminal status).
        """
        for _ in range(_PRECONDITION_RETRIES):
            snap = self._snapshot(deployment_id)
            doc = snap.to_dict() or {}
            current = Status(doc["status"])
            if current is to:
                return TransitionResult(changed=False, previous=current, document=doc)
            if not can_transition(current, to):
                raise IllegalTransitionError(current.value, to.value)
            now = utcnow()
            updates = {"status": to.value, "updated_at": now, f"phase_timestamps.{to.value}": now, **(fields or {})}
            if self._commit_with_line(snap, updates, level, message, now):
                merged = _apply(doc, updates)
                return TransitionResult(changed=True, previous=current, document=merged)
        raise RetryableError(f"deployment {deployment_id} kept changing under us")

    def update_if_status(
        self,
        deployment_id: str,
        allowed: Iterable[Status],
        fields: dict[str, Any],
        message: str | None = None,
        unless_set: str | None = None,
    ) -> dict[str, Any] | None:
        """Set ``fields`` only while the status is one of ``allowed`` and the field ``unless_set`` (if named) is
        still empty; returns the new document or None if refused."""
        allowed_set = set(allowed)
        for _ in range(_PRECONDITION_RETRIES):
            snap = self._snapshot(deployment_id)
            doc = snap.to_dict() or {}
            if Status(doc["status"]) not in allowed_set or (unless_set and doc.get(unless_set)):
                return None
            updates = {"updated_at": utcnow(), **fields}
            if message is None:
                try:
                    snap.reference.update(updates, option=self._db.write_option(last_update_time=snap.update_time))
                except (gexc.FailedPrecondition, gexc.Aborted):
                    continue
                return _apply(doc, updates)
            if self._commit_with_line(snap, updates, "info", message, updates["updated_at"]):
                return _apply(doc, updates)
        raise RetryableError(f"deployment {deployment_id} kept changing under us")

    def log(self, deployment_id: str, message: str, level: str = "info") -> None:
        """Append one line to the deployment's bounded event log."""
        for _ in range(_PRECONDITION_RETRIES):
            snap = self._snapshot(deployment_id)
            if self._commit_with_line(snap, {}, level, message, utcnow()):
                return
        raise RetryableError(f"deployment {deployment_id} kept changing under us")

    def _snapshot(self, deployment_id: str) -> Any:
        snap = self._db.collection(DEPLOYMENTS).document(deployment_id).get()
        if not snap.exists:
            raise DeploymentNotFoundError(deployment_id)
        return snap

    def _commit_with_line(self, snap: Any, updates: dict[str, Any], level: str, message: str, now: datetime) -> bool:
        """Apply ``updates`` plus one log line atomically, if nobody wrote the document since ``snap``."""
        seq = int((snap.to_dict() or {}).get("event_seq", 0)) + 1
        batch = self._db.batch()
        batch.update(
            snap.reference,
            {**updates, "event_seq": seq},
            option=self._db.write_option(last_update_time=snap.update_time),
        )
        lines = snap.reference.collection(EVENTS)
        batch.set(lines.document(_line_id(seq)), _line(level, message, now))
        if seq > self._max_lines:
            batch.delete(lines.document(_line_id(seq - self._max_lines)))
        try:
            batch.commit()
        except (gexc.FailedPrecondition, gexc.Aborted):
            return False
        return True

    # --- server-only records ----------------------------------------------------------------------------------------

    def secrets(self, deployment_id: str) -> dict[str, Any] | None:
        snap = self._db.collection(SECRETS).document(deployment_id).get()
        return snap.to_dict() if snap.exists else None

    def erase_secrets(self, deployment_id: str) -> None:
        """Remove the sealed credentials and the callback secret's nonce and hash (idempotent)."""
        self._db.collection(SECRETS).document(deployment_id).delete()

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


def _line_id(seq: int) -> str:
    return f"{seq:010d}"


def _line(level: str, message: str, at: datetime) -> dict[str, Any]:
    return {"time": at, "level": level, "message": message}


def _apply(doc: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """The document as it is after ``updates`` (dotted keys are nested fields, as in Firestore)."""
    merged = dict(doc)
    for key, value in updates.items():
        target = merged
        *parents, leaf = key.split(".")
        for parent in parents:
            target[parent] = dict(target.get(parent) or {})
            target = target[parent]
        target[leaf] = value
    return merged


def encode_page_token(doc: dict[str, Any]) -> str:
    created_at: datetime = doc["created_at"]
    raw = json.dumps([created_at.isoformat(), doc["deployment_id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[datetime, str]:
    """Raises ValueError on a token we did not issue."""
    padded = token + "=" * (-len(token) % 4)
    created_at, last_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
    if not isinstance(last_id, str):
        raise ValueError("bad page token")
    return datetime.fromisoformat(created_at), last_id

"""The Firestore store: deployments, their event logs, sealed credentials, idempotency and rate-limit records.

Status changes are read-check-write with an ``update_time`` precondition (retried on conflict), not transactions:
the emulator punishes contended transactions with ~2 s lock waits, and production Firestore gives the same
guarantee for a single document either way. Creation is one batch with create-if-absent preconditions, so a
POST is one commit and concurrent duplicates collide instead of doubling.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from shared.conditional import until_written
from shared.document import Deployment
from shared.errors import DeploymentNotFoundError, RetryableError
from shared.lifecycle import Status
from shared.page_tokens import decode_page_token, encode_page_token

DEPLOYMENTS = "deployments"
# Deployment ids are uuid4().hex; the routes and page tokens accept nothing else.
DEPLOYMENT_ID_PATTERN = "[0-9a-f]{32}"
EVENTS = "events"
SECRETS = "deployment_secrets"
# A deployment's invoke keys (shared.jobs.invoke_keys) and their count; erased with its secrets.
INVOKE_KEYS = "invoke_keys"
INVOKE_KEY_COUNTS = "invoke_key_counts"
IDEMPOTENCY = "idempotency_keys"
RATE_LIMITS = "rate_limits"
REQUEST_COUNTERS = "request_counters"
KEY_VERDICTS = "key_verdicts"
# The webhook-ids of the signed worker reports taken in the last tolerance window (replays are refused).
SEEN_REPORTS = "seen_reports"
TENANT_LIMITS = "tenant_limits"
# A deployment holds its tenant's slot (and its workers_min) from its create until it first becomes one of these.
RELEASING_STATUSES = frozenset({Status.FAILED, Status.DELETED})

_BATCH_WRITES = 400  # under Firestore's 500 writes per commit
PING_TIMEOUT_S = 3.0
REQUEST_COUNTER_SHARDS = 8
COUNTER_WRITE_TIMEOUT_S = 5.0


def utcnow() -> datetime:
    return datetime.now(UTC)


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
class KeyVerdict:
    """Whether Runpod accepts a tenant's key, until ``expires_at`` (a Firestore TTL policy removes old ones)."""

    valid: bool
    expires_at: datetime
    checked_at: datetime | None = None  # when Runpod gave it (None: a record from before it was kept)


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


class DeploymentStore:
    """Firestore access for deployments. Clients are built once per instance and passed in."""

    def __init__(self, client: firestore.Client, event_log_max_lines: int = 200) -> None:
        self._db = client
        self._max_lines = event_log_max_lines

    # --- creation and reads -------------------------------------------------------------------------------------

    def read_before_create(self, rate_key: str, idempotency_key: str | None, tenant: str) -> BeforeCreate:
        """The count so far in the tenant's rate window, the idempotency record and the tenant's counts, in one
        round trip."""
        rate_ref = self._db.collection(RATE_LIMITS).document(rate_key)
        tenant_ref = self._db.collection(TENANT_LIMITS).document(tenant)
        refs = [rate_ref, tenant_ref]
        if idempotency_key:
            refs.append(self._db.collection(IDEMPOTENCY).document(idempotency_key))
        count, record, counts = 0, None, TenantCounts()
        for snap in self._db.get_all(refs):
            if not snap.exists:
                continue
            data = snap.to_dict() or {}
            if snap.reference.path == rate_ref.path:
                count = int(data.get("count", 0))
            elif snap.reference.path == tenant_ref.path:
                counts = TenantCounts(
                    live=int(data.get("live", 0)),
                    workers_min=int(data.get("workers_min", 0)),
                    update_time=snap.update_time,
                )
            else:
                record = IdempotencyRecord(data, snap.update_time)
        return BeforeCreate(count, record, counts)

    def create(
        self,
        new: NewDeployment,
        counter: tuple[str, datetime] | None = None,
        tenant_counts: TenantCounts | None = None,
    ) -> None:
        """Write the document, its first log line, sealed credentials and the idempotency record in one commit.

        ``counter`` (rate-limit key, expiry) is incremented in the same commit. ``tenant_counts`` (as read before)
        are raised by this deployment in the same commit, on condition that nobody changed them since the read.

        Raises:
            google.api_core.exceptions.AlreadyExists: the idempotency key (or the id, or a tenant counter read as
                absent) exists already.
            google.api_core.exceptions.FailedPrecondition: the expired record it replaces, or the tenant's counts,
                changed (or went) meanwhile.
        """
        doc = new.document.model_copy(update={"event_seq": 1, "tenant_slot": tenant_counts is not None}).to_firestore()
        deployment_id = new.document.deployment_id
        ref = self._db.collection(DEPLOYMENTS).document(deployment_id)
        batch = self._db.batch()
        if new.idempotency_key and new.idempotency_record is not None:
            key_ref = self._db.collection(IDEMPOTENCY).document(new.idempotency_key)
            if new.replaces_expired_record is None:
                batch.create(key_ref, new.idempotency_record)
            else:  # every field is rewritten, so nothing of the expired record survives
                option = self._db.write_option(last_update_time=new.replaces_expired_record)
                batch.update(key_ref, new.idempotency_record, option=option)
        batch.create(ref, doc)
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
        if tenant_counts is not None:
            counts_ref = self._db.collection(TENANT_LIMITS).document(doc["owner"])
            raised = {
                "live": tenant_counts.live + 1,
                "workers_min": tenant_counts.workers_min + new.document.workers_min,
            }
            if tenant_counts.update_time is None:
                batch.create(counts_ref, raised)
            else:
                option = self._db.write_option(last_update_time=tenant_counts.update_time)
                batch.update(counts_ref, raised, option=option)
        batch.commit()

    def discard(self, deployment_id: str) -> None:
        """Undo :meth:`create` (a request that could not be handed on), so nothing is half-written."""
        ref = self._db.collection(DEPLOYMENTS).document(deployment_id)
        snap = ref.get()
        batch = self._db.batch()
        batch.delete(ref.collection(EVENTS).document(_line_id(1)))
        if snap.exists:
            batch.delete(ref, option=self._db.write_option(last_update_time=snap.update_time))
            self._release_tenant_slot(batch, Deployment.from_firestore(snap.to_dict() or {}))
        batch.delete(self._db.collection(SECRETS).document(deployment_id))
        batch.commit()

    def tenant_counts(self, tenant: str) -> TenantCounts:
        snap = self._db.collection(TENANT_LIMITS).document(tenant).get()
        if not snap.exists:
            return TenantCounts()
        data = snap.to_dict() or {}
        return TenantCounts(int(data.get("live", 0)), int(data.get("workers_min", 0)), snap.update_time)

    def _release_tenant_slot(self, batch: Any, doc: Deployment) -> None:
        """Give the deployment's slot back to its tenant's counts, in ``batch`` (whose commit is conditional on the
        deployment's own document, so a slot is given back once)."""
        if doc.tenant_slot:
            batch.set(
                self._db.collection(TENANT_LIMITS).document(doc.owner),
                {"live": firestore.Increment(-1), "workers_min": firestore.Increment(-doc.workers_min)},
                merge=True,
            )

    def get(self, deployment_id: str) -> Deployment | None:
        snap = self._db.collection(DEPLOYMENTS).document(deployment_id).get()
        return Deployment.from_firestore(snap.to_dict() or {}) if snap.exists else None

    def get_idempotency_record(self, key: str) -> IdempotencyRecord | None:
        snap = self._db.collection(IDEMPOTENCY).document(key).get()
        return IdempotencyRecord(snap.to_dict() or {}, snap.update_time) if snap.exists else None

    def list_by_owner(
        self, owner: str, status: Status | None, limit: int, page_token: str | None
    ) -> tuple[list[Deployment], str | None]:
        """Newest first, cursor-paginated; the token is opaque to clients.

        Raises:
            InvalidPageTokenError: a token this API did not issue.
        """
        query = self._db.collection(DEPLOYMENTS).where(filter=firestore.FieldFilter("owner", "==", owner))
        if status is not None:
            query = query.where(filter=firestore.FieldFilter("status", "==", status.value))
        query = query.order_by("created_at", direction=firestore.Query.DESCENDING).order_by(
            "deployment_id", direction=firestore.Query.DESCENDING
        )
        if page_token:
            created_at, last_id = decode_page_token(page_token, DEPLOYMENT_ID_PATTERN)
            query = query.start_after({"created_at": created_at, "deployment_id": last_id})
        docs = [Deployment.from_firestore(snap.to_dict() or {}) for snap in query.limit(limit + 1).stream()]
        page = docs[:limit]
        last = page[-1] if len(docs) > limit and page else None
        next_token = encode_page_token(last.created_at, last.deployment_id) if last is not None else None
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

    def update(
        self,
        deployment_id: str,
        change: Callable[[Deployment], bool],
        message: str | None = None,
        level: str = "info",
    ) -> Deployment | None:
        """The one way a deployment changes: read, let ``change`` edit the typed document, write it back only if
        nobody wrote it since the read (an ``update_time`` precondition; retried on conflict), with ``message`` as
        one log line in the same commit.

        ``change`` decides from the document alone and returns False to leave it as it is (then None is returned);
        it may raise, e.g. IllegalTransitionError, which propagates. Only the fields it changed are written, so
        fields this release does not know survive.

        Raises:
            DeploymentNotFoundError: no such deployment.
            RetryableError: the document kept changing under us.
        """

        def attempt() -> Deployment | None:
            snap = self._snapshot(deployment_id)
            stored = snap.to_dict() or {}
            doc = Deployment.from_firestore(stored)
            if not change(doc):
                return None
            now = utcnow()
            doc.updated_at = now
            holder = Deployment.from_firestore(stored) if doc.status in RELEASING_STATUSES else None
            release = holder if holder is not None and holder.tenant_slot else None
            if release is not None:
                doc.tenant_slot = False
            written = doc.to_firestore()
            updates: dict[str, Any] = {k: v for k, v in written.items() if stored.get(k) != v}
            updates.update({k: firestore.DELETE_FIELD for k in stored if k not in written})
            self._commit_with_line(snap, updates, level, message, now, release=release)
            if message is not None:
                doc.event_seq = int(stored.get("event_seq", 0)) + 1
            return doc

        return until_written(attempt, f"deployment {deployment_id}")

    def log(self, deployment_id: str, message: str, level: str = "info") -> None:
        """Append one line to the deployment's bounded event log."""
        until_written(
            lambda: self._commit_with_line(self._snapshot(deployment_id), {}, level, message, utcnow()),
            f"deployment {deployment_id}",
        )

    def _snapshot(self, deployment_id: str) -> Any:
        snap = self._db.collection(DEPLOYMENTS).document(deployment_id).get()
        if not snap.exists:
            raise DeploymentNotFoundError(deployment_id)
        return snap

    def _commit_with_line(
        self,
        snap: Any,
        updates: dict[str, Any],
        level: str,
        message: str | None,
        now: datetime,
        *,
        release: Deployment | None = None,
    ) -> None:
        """Apply ``updates`` plus one log line (unless ``message`` is None) atomically, if nobody wrote the document
        since ``snap`` (else a conflict, for :func:`until_written`); ``release`` gives that deployment's tenant slot
        back in the same commit."""
        batch = self._db.batch()
        option = self._db.write_option(last_update_time=snap.update_time)
        if message is None:
            batch.update(snap.reference, updates, option=option)
        else:
            seq = int((snap.to_dict() or {}).get("event_seq", 0)) + 1
            batch.update(snap.reference, {**updates, "event_seq": seq}, option=option)
            lines = snap.reference.collection(EVENTS)
            batch.set(lines.document(_line_id(seq)), _line(level, message, now))
            if seq > self._max_lines:
                batch.delete(lines.document(_line_id(seq - self._max_lines)))
        if release is not None:
            self._release_tenant_slot(batch, release)
        batch.commit()

    # --- server-only records ----------------------------------------------------------------------------------------

    def secrets(self, deployment_id: str) -> dict[str, Any] | None:
        snap = self._db.collection(SECRETS).document(deployment_id).get()
        return snap.to_dict() if snap.exists else None

    def erase_secrets(self, deployment_id: str) -> None:
        """Remove the sealed credentials, the callback secret's nonce and hash, and the deployment's invoke keys
        (idempotent)."""
        self._db.collection(SECRETS).document(deployment_id).delete()
        self._db.collection(INVOKE_KEY_COUNTS).document(deployment_id).delete()
        keys = self._db.collection(INVOKE_KEYS).where(
            filter=firestore.FieldFilter("deployment_id", "==", deployment_id)
        )
        refs = [snap.reference for snap in keys.stream()]
        for start in range(0, len(refs), _BATCH_WRITES):
            batch = self._db.batch()
            for ref in refs[start : start + _BATCH_WRITES]:
                batch.delete(ref)
            batch.commit()

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

    # --- the sweep's queries (shared.deployments.sweep; indexes in firestore.indexes.json) -----------------------

    def sweep_candidates(
        self, statuses: list[Status], field: str, before: datetime | int, limit: int
    ) -> Iterator[Deployment]:
        """Deployments in ``statuses`` whose ``field`` is below ``before`` (a timestamp, or a number), in pages of
        ``limit``: each page is one bounded query (status, field) that an index serves."""
        query = (
            self._db.collection(DEPLOYMENTS)
            .where(filter=firestore.FieldFilter("status", "in", [s.value for s in statuses]))
            .where(filter=firestore.FieldFilter(field, "<", before))
            .order_by(field)
            .order_by("deployment_id")
        )
        cursor: Any = None
        while True:
            page = query.start_after(cursor) if cursor is not None else query
            snaps = list(page.limit(limit).stream())
            for snap in snaps:
                yield Deployment.from_firestore(snap.to_dict() or {})
            if len(snaps) < limit:
                return
            cursor = snaps[-1]

    def tenants_with_credentials(self) -> dict[str, str]:
        """Each tenant we hold sealed credentials for (a live deployment's), with one of its deployment ids."""
        tenants: dict[str, str] = {}
        for snap in self._db.collection(SECRETS).select(["owner"]).stream():
            owner = (snap.to_dict() or {}).get("owner")
            if owner:
                tenants.setdefault(str(owner), snap.id)
        return tenants

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


def _line_id(seq: int) -> str:
    return f"{seq:010d}"


def _line(level: str, message: str, at: datetime) -> dict[str, Any]:
    return {"time": at, "level": level, "message": message}

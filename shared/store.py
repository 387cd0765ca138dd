"""The Firestore store: deployments, their event logs, sealed credentials, idempotency and rate-limit records.

Status changes are read-check-write with an ``update_time`` precondition (retried on conflict), not transactions:
the emulator punishes contended transactions with ~2 s lock waits, and production Firestore gives the same
guarantee for a single document either way. Creation is one batch with create-if-absent preconditions, so a
POST is one commit and concurrent duplicates collide instead of doubling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from shared.conditional import until_written
from shared.creation import BeforeCreate, IdempotencyRecord, NewDeployment, TenantCounts
from shared.document import Deployment
from shared.errors import DeploymentNotFoundError, RetryableError
from shared.lifecycle import Status
from shared.page_tokens import decode_page_token, encode_page_token
from shared.server_records import (
    RATE_LIMITS,
    ServerRecords,
    utcnow,
)

DEPLOYMENTS = "deployments"
# Deployment ids are uuid4().hex; the routes and page tokens accept nothing else.
DEPLOYMENT_ID_PATTERN = "[0-9a-f]{32}"
EVENTS = "events"
SECRETS = "deployment_secrets"
# A deployment's invoke keys (shared.jobs.invoke_keys) and their count; erased with its secrets.
INVOKE_KEYS = "invoke_keys"
INVOKE_KEY_COUNTS = "invoke_key_counts"
IDEMPOTENCY = "idempotency_keys"
TENANT_LIMITS = "tenant_limits"
# A deployment holds its tenant's slot (and its workers_min) from its create until it first becomes one of these.
RELEASING_STATUSES = frozenset({Status.FAILED, Status.DELETED})

_BATCH_WRITES = 400  # under Firestore's 500 writes per commit
PING_TIMEOUT_S = 3.0


class DeploymentStore(ServerRecords):
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


def _line_id(seq: int) -> str:
    return f"{seq:010d}"


def _line(level: str, message: str, at: datetime) -> dict[str, Any]:
    return {"time": at, "level": level, "message": message}

"""The intake steps: plain functions over typed inputs and explicit collaborators."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError

from shared.conditional import until_written
from shared.config import IntakeSettings, Settings
from shared.creation import IdempotencyRecord, NewDeployment, TenantCounts
from shared.crypto import Sealer, secret_hash
from shared.deployments.transitions import Transitions
from shared.document import Deployment
from shared.errors import ApiError, IllegalTransitionError, RetryableError
from shared.http import validation_error
from shared.intake.auth import Caller, invoke_key_refused
from shared.intake.keys import KeyVerifier
from shared.intake.ratelimit import RateWindow, count_request
from shared.lifecycle import Status
from shared.messages import DeploymentDeleteRequested, DeploymentRequested
from shared.models import (
    CreateDeploymentRequest,
    CreateDeploymentResponse,
    DeleteDeploymentResponse,
    DeploymentList,
    SealedCredentials,
)
from shared.page_tokens import InvalidPageTokenError
from shared.pubsub import Publisher
from shared.store import DeploymentStore, utcnow
from shared.topology import TOPIC_DEPLOYMENT_DELETE_REQUESTED, TOPIC_DEPLOYMENT_REQUESTED

IDEMPOTENCY_TTL = timedelta(hours=24)
# The statuses in which the invoke keys of a deployment are refused.
_KEYS_DEAD = frozenset({Status.DELETING, Status.DELETED})
MAX_IDEMPOTENCY_KEY = 255
DEFAULT_PAGE = 20
MAX_PAGE = 100
# Rounds of read-decide-commit a create may take while parallel creates of its tenant change the counts it read
# (each round, one of them commits; past the cap, the rest are refused at the read).
CREATE_ATTEMPTS = 64


@dataclass(frozen=True)
class IntakeDeps:
    settings: IntakeSettings
    store: DeploymentStore
    transitions: Transitions
    publisher: Publisher
    sealer: Sealer
    keys: KeyVerifier


def parse_create_request(raw: bytes, settings: Settings) -> CreateDeploymentRequest:
    try:
        return CreateDeploymentRequest.model_validate_json(
            raw,
            context={
                "allow_http_loopback": settings.allow_http_loopback_webhooks,
                "ttl_min_minutes": settings.ttl_min_minutes,
            },
        )
    except ValidationError as exc:
        raise validation_error(exc) from exc


def check_idempotency_key(idempotency_key: str | None) -> None:
    if idempotency_key is not None and (
        not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY or not idempotency_key.isprintable()
    ):
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key must be 1-255 printable characters")


def _request_fingerprint(pepper: str, raw: bytes) -> str:
    """Same JSON → same fingerprint, whatever the key order; keyed, because the body may hold tokens."""
    try:
        canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = raw
    return hmac.new(pepper.encode(), canonical, hashlib.sha256).hexdigest()


def _idempotency_doc_id(tenant: str, key: str) -> str:
    return hashlib.sha256(f"{tenant}\n{key}".encode()).hexdigest()


def create_deployment(
    deps: IntakeDeps,
    caller: Caller,
    body: CreateDeploymentRequest,
    raw: bytes,
    *,
    idempotency_key: str | None,
    rate: RateWindow,
) -> CreateDeploymentResponse:
    """Write the deployment (one commit) and hand it to provisioning.

    One read first: the tenant's rate window (a full window refuses the request before anything is written), the
    idempotency record (a live one is replayed; an expired one is replaced in the create's commit) and the tenant's
    counts (a create past ``MAX_LIVE_DEPLOYMENTS_PER_TENANT`` or ``MAX_WORKERS_MIN_PER_TENANT`` is refused). The
    commit raises those counts on condition that they did not change since the read: a create that lost that race
    reads again and decides again (docs/decisions/2026-12-tenant-limits.md).
    """
    pepper = deps.settings.tenant_pepper.get_secret_value()
    key_id = _idempotency_doc_id(caller.tenant, idempotency_key) if idempotency_key is not None else None
    fingerprint = _request_fingerprint(pepper, raw)

    def attempt() -> CreateDeploymentResponse:
        before = deps.store.read_before_create(rate.key, key_id, caller.tenant)
        record = before.record
        if record is not None and not _expired(record):
            return _replay(deps, rate, record, fingerprint)
        if before.rate_count >= rate.limit:
            count_request(deps.store, rate)  # the refusal counts too, so this raises the 429
        _check_tenant_limits(deps, rate, before.tenant, body.workers_min)
        new, response = _new_deployment(deps, caller, body, key_id, fingerprint=fingerprint, record=record)
        # Admitted on the count read above: requests racing this one may pass the rate limit by as many as are in
        # flight at once (docs/decisions/2026-11-rate-limit-counting.md); a transaction would cost more. A conflict:
        # a concurrent request with the same key won the race (the next read replays its answer), or another create
        # of this tenant changed its counts (the next read decides on the new ones).
        deps.store.create(new, counter=(rate.key, rate.expires_at), tenant_counts=before.tenant)
        _publish_created(deps, new.document.deployment_id, key_id)
        return response

    return until_written(attempt, "the tenant's deployments", attempts=CREATE_ATTEMPTS)


def _check_tenant_limits(deps: IntakeDeps, rate: RateWindow, counts: TenantCounts, workers_min: int) -> None:
    """409 ``tenant_limit_reached`` when this create would pass one of the tenant's caps (nothing is written)."""
    settings = deps.settings
    refusal: tuple[str, int, int] | None = None
    if counts.live + 1 > settings.max_live_deployments_per_tenant:
        refusal = ("live_deployments", settings.max_live_deployments_per_tenant, counts.live)
    elif counts.workers_min + workers_min > settings.max_workers_min_per_tenant:
        refusal = ("workers_min", settings.max_workers_min_per_tenant, counts.workers_min)
    if refusal is None:
        return
    count_request(deps.store, rate)  # refused requests count too (this may raise the 429 instead)
    what, limit, current = refusal
    message = (
        f"this account has {current} live deployments, the most allowed is {limit}; delete one first"
        if what == "live_deployments"
        else f"this account's live deployments keep {current} workers always on (workers_min), the most allowed is "
        f"{limit}; lower workers_min or delete a deployment first"
    )
    raise ApiError(409, "tenant_limit_reached", message, {"limit": limit, "current": current, "counter": what})


def _new_deployment(
    deps: IntakeDeps,
    caller: Caller,
    body: CreateDeploymentRequest,
    key_id: str | None,
    *,
    fingerprint: str,
    record: IdempotencyRecord | None,
) -> tuple[NewDeployment, CreateDeploymentResponse]:
    now = utcnow()
    deployment_id = uuid.uuid4().hex
    base = deps.settings.public_api_base_url.rstrip("/")
    response = CreateDeploymentResponse(
        deployment_id=deployment_id,
        status_url=f"{base}/v1/deployments/{deployment_id}",
        stream_url=f"{base}/v1/deployments/{deployment_id}/stream",
        created_at=now,
    )
    credentials = SealedCredentials(
        runpod_api_key=caller.api_key,
        hf_token=body.hf_token.get_secret_value() if body.hf_token else None,
        user_aws_access_key_id=body.user_aws_access_key_id.get_secret_value() if body.user_aws_access_key_id else None,
        user_aws_secret_access_key=(
            body.user_aws_secret_access_key.get_secret_value() if body.user_aws_secret_access_key else None
        ),
    )
    nonce = secrets.token_urlsafe(16)
    new = NewDeployment(
        document=_initial_document(deployment_id, caller.tenant, body, now),
        sealed_credentials=deps.sealer.seal(deployment_id, credentials),
        callback_nonce=nonce,
        callback_secret_hash=secret_hash(deps.sealer.callback_secret(deployment_id, nonce)),
        idempotency_key=key_id,
        idempotency_record=(
            {
                "owner": caller.tenant,
                "fingerprint": fingerprint,
                "response": response.model_dump(mode="json"),
                "expires_at": now + IDEMPOTENCY_TTL,
            }
            if key_id
            else None
        ),
        replaces_expired_record=record.update_time if record is not None else None,
    )
    return new, response


def _publish_created(deps: IntakeDeps, deployment_id: str, key_id: str | None) -> None:
    try:
        _publish_requested(deps, deployment_id)
    except RetryableError:
        if key_id is None:
            deps.store.discard(deployment_id)  # nobody else knows this id: as if nothing had been asked
        # With a key, a duplicate may already have replayed this deployment, so it stays; the client's retry with
        # the same key replays it and publishes again.
        raise


def _replay(
    deps: IntakeDeps, rate: RateWindow, record: IdempotencyRecord, fingerprint: str
) -> CreateDeploymentResponse:
    """The first answer for this key, published again.

    The first request may still be publishing, or its publish may have failed: a replayed 202 must rest on a publish
    that happened, so the replay publishes too (provisioning treats repeats as no-ops).
    """
    count_request(deps.store, rate)
    if not hmac.compare_digest(record.data["fingerprint"], fingerprint):
        raise ApiError(409, "idempotency_key_reused", "this Idempotency-Key was used with a different request body")
    response = CreateDeploymentResponse.model_validate(record.data["response"])
    _publish_requested(deps, response.deployment_id)
    return response


def _expired(record: IdempotencyRecord) -> bool:
    expires_at: datetime = record.data["expires_at"]
    return expires_at < utcnow()


def _publish_requested(deps: IntakeDeps, deployment_id: str) -> None:
    deps.publisher.publish(
        TOPIC_DEPLOYMENT_REQUESTED,
        DeploymentRequested(deployment_id=deployment_id, requested_at=utcnow()),
        deployment_id=deployment_id,
    )


def _initial_document(deployment_id: str, owner: str, body: CreateDeploymentRequest, now: datetime) -> Deployment:
    return Deployment(
        deployment_id=deployment_id,
        owner=owner,
        status=Status.VALIDATING,
        hf_model_id=body.hf_model_id,
        revision=body.revision,
        gpu_tier=body.gpu_tier,
        cache_scope=body.cache_scope,
        user_s3_url=body.user_s3_url,
        user_aws_endpoint_url=body.user_aws_endpoint_url,
        user_aws_region=body.user_aws_region,
        output_s3_url=body.output_s3_url,
        has_hf_token=body.hf_token is not None,
        workers_min=body.workers_min,
        workers_max=body.workers_max,
        idle_timeout_seconds=body.idle_timeout_seconds,
        ttl_minutes=body.ttl_minutes,
        idle_delete_minutes=body.idle_delete_minutes,
        user_webhook_url=body.user_webhook_url,
        webhook_events=sorted(set(body.webhook_events)) if body.webhook_events else None,
        task=body.task,
        loras=list(body.loras),
        max_cost_usd=body.max_cost_usd,
        created_at=now,
        updated_at=now,
        phase_timestamps={Status.VALIDATING: now},
        expires_at=now + timedelta(minutes=body.ttl_minutes) if body.ttl_minutes else None,
    )


def owned_deployment(store: DeploymentStore, caller: Caller, deployment_id: str) -> Deployment:
    """The caller's deployment; someone else's is a 404 (never 403: existence is not revealed).

    An invoke key dies with its deployment: once it is ``deleting`` or ``deleted`` the key is 401
    ``invalid_api_key`` (the cleanup then deletes it).
    """
    doc = store.get(deployment_id)
    if doc is None or not hmac.compare_digest(doc.owner, caller.tenant):
        raise ApiError(404, "deployment_not_found", f"no deployment {deployment_id!r}")
    if caller.deployment_id is not None and doc.status in _KEYS_DEAD:
        raise invoke_key_refused()
    return doc


def list_deployments(
    store: DeploymentStore, caller: Caller, status: str | None, limit: str | None, page_token: str | None
) -> DeploymentList:
    try:
        wanted = Status(status) if status else None
    except ValueError as exc:
        raise ApiError(400, "invalid_status", f"status must be one of: {', '.join(s.value for s in Status)}") from exc
    size = DEFAULT_PAGE
    if limit is not None:
        if not re.fullmatch("[0-9]{1,3}", limit) or not 1 <= int(limit) <= MAX_PAGE:  # ASCII digits only
            raise ApiError(400, "invalid_limit", f"limit must be an integer from 1 to {MAX_PAGE}")
        size = int(limit)
    try:
        docs, next_token = store.list_by_owner(caller.tenant, wanted, size, page_token)
    except InvalidPageTokenError as exc:
        raise ApiError(400, "invalid_page_token", "page_token was not issued by this API") from exc
    return DeploymentList(
        deployments=[d.view() for d in docs],
        next_page_token=next_token,
        counts_by_status=store.counts_by_status(caller.tenant),
    )


def _by_user(doc: Deployment) -> None:
    doc.delete_reason = doc.delete_reason or "user"


def delete_deployment(deps: IntakeDeps, caller: Caller, deployment_id: str) -> DeleteDeploymentResponse:
    """Move to ``deleting`` and ask cleanup to tear down; repeating it is harmless (cleanup is idempotent)."""
    doc = owned_deployment(deps.store, caller, deployment_id)
    if doc.status is Status.DELETED:
        return DeleteDeploymentResponse(deployment_id=deployment_id, status="deleted")
    try:
        deps.transitions.move(deployment_id, Status.DELETING, "delete requested by the owner", apply=_by_user)
    except IllegalTransitionError:
        # Only "deleted" refuses "deleting"; it got there between our read and write.
        return DeleteDeploymentResponse(deployment_id=deployment_id, status="deleted")
    deps.publisher.publish(
        TOPIC_DEPLOYMENT_DELETE_REQUESTED,
        DeploymentDeleteRequested(deployment_id=deployment_id, requested_at=utcnow()),
        deployment_id=deployment_id,
    )
    return DeleteDeploymentResponse(deployment_id=deployment_id, status="deleting")

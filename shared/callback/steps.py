"""callback: the phase reports a deployment's worker sends (``downloading_model``, ``loading_model``, ``ready``,
``failed``), and its shared-cache grant requests, signed Standard-Webhooks style with the deployment's own derived
secret.

Only the secret's nonce and hash are stored: the secret is derived again here, checked against the hash (an erased
or rotated secret no longer verifies), and the signature checked within the tolerance window, so a forged, replayed
or cross-deployment report changes nothing. Phases only move forward; a late or repeated report is accepted and
ignored, so the worker does not retry it.

A cache grant (docs/contracts.md "Shared-cache grant") answers the manifest of the deployment's model in the shared
cache and presigned GET URLs for its files, only when provisioning granted the deployment the shared cache (its
model is on the allowlist and its token passed the Hub's check), the request names that model at its pinned
commit, and the deployment is in a state where a worker may be starting. The shared cache's keys never leave the
platform.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.crypto import secret_hash
from shared.deployments.deps import StepDeps
from shared.deployments.model_cache import SharedModelCache
from shared.deployments.teardown import fail_deployment
from shared.document import Deployment
from shared.errors import DeploymentNotFoundError, IllegalTransitionError
from shared.gpu import pool_of_gpu_type
from shared.jobs.ends import schedule_check
from shared.jobs.records import JOB_ID_PATTERN
from shared.lifecycle import PROVISIONING, WORKER_FAILURE_REASONS, FailureReason, Status
from shared.messages import JobCheck, PhaseReport
from shared.models import CacheScope, Progress, Timings
from shared.signing import HEADER_ID, SignatureError, check_headers, verify
from shared.store import utcnow

logger = logging.getLogger(__name__)

DEPLOYMENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Where a worker may be starting: the first ones during provisioning, later ones when a ready endpoint scales out.
_GRANT_STATUSES = {Status.CREATING_ENDPOINT, Status.DOWNLOADING_MODEL, Status.LOADING_MODEL, Status.READY}


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    REPLAYED = "replayed"
    UNAUTHORIZED = "unauthorized"
    MALFORMED = "malformed"
    FORBIDDEN = "forbidden"
    NOT_CACHED = "not_cached"


class CacheGrantRequest(BaseModel):
    """A worker's request for the shared cache (``POST .../cache-grant``); see docs/contracts.md."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = 1
    deployment_id: str
    model_id: str
    revision: str


_Body = TypeVar("_Body", PhaseReport, CacheGrantRequest)


@dataclass(frozen=True)
class GrantAnswer:
    """The outcome of a grant request, and the grant itself when accepted."""

    outcome: Outcome
    grant: dict[str, Any] | None = None
    reason: str = ""


@dataclass(frozen=True)
class SignedReport:
    """One report as it arrived: the deployment id from the URL path, the headers, the raw body."""

    deployment_id: str
    headers: Mapping[str, str]
    body: bytes


def receive_report(request: SignedReport, deps: StepDeps) -> Outcome:
    """Authenticate and apply one phase report, once: a report whose ``webhook-id`` was taken within the tolerance
    window (a captured ``ready`` replayed after a stop and start, say) is :attr:`Outcome.REPLAYED` and changes
    nothing."""
    report = _authenticate(request, deps, PhaseReport)
    if isinstance(report, Outcome):
        return report
    msg_id = next(v for k, v in request.headers.items() if k.lower() == HEADER_ID)  # verified: it is there
    # Accepted while |now - timestamp| <= tolerance, and the timestamp may be up to that far ahead: twice covers it.
    expires_at = utcnow() + timedelta(seconds=2 * deps.settings.callback_tolerance_s)
    if not deps.store.remember_report(report.deployment_id, msg_id, expires_at):
        logger.warning("replayed phase report refused", extra={"fields": {"phase": report.phase}})
        return Outcome.REPLAYED
    try:
        _apply(report, deps)
    except DeploymentNotFoundError:
        logger.warning("phase report for a deployment that no longer exists")
    except Exception:
        deps.store.forget_report(report.deployment_id, msg_id)  # not applied: the worker's retry (same id) must pass
        raise
    return Outcome.ACCEPTED


class JobEnded(BaseModel):
    """Runpod's call on a job's end: the job as ``/status`` shows it; only its id is read (the check asks Runpod)."""

    model_config = ConfigDict(extra="ignore")

    id: Annotated[str, Field(pattern=f"^{JOB_ID_PATTERN}$")]


def nudge_job_check(deployment_id: str, token: str, body: Callable[[], bytes | None], deps: StepDeps) -> Outcome:
    """Runpod says a job of the deployment ended: check the job now, ahead of the job watch's schedule.

    Runpod's job webhooks are unsigned: the token in the URL we gave Runpod authenticates the call, and only then is
    the body read (``body()``; None when it is over the callback's cap). The body is not trusted beyond the job id
    (a forged id makes one check of a job that is not there). A body over the cap (a job with large inline outputs)
    is accepted without a nudge: the job watch checks that job on its own schedule.
    """
    if not hmac.compare_digest(token.encode(), deps.sealer.job_ended_token(deployment_id).encode()):
        return Outcome.UNAUTHORIZED
    raw = body()
    if raw is None:
        logger.info("job-ended call over the body cap: left to the job watch")
        return Outcome.ACCEPTED
    try:
        ended = JobEnded.model_validate_json(raw)
    except ValidationError:
        return Outcome.MALFORMED
    schedule_check(deps.tasks, JobCheck(deployment_id=deployment_id, job_id=ended.id, nudge=True), 0)
    return Outcome.ACCEPTED


def grant_cache(request: SignedReport, deps: StepDeps, cache: SharedModelCache | None) -> GrantAnswer:
    """Authenticate a shared-cache grant request and answer the manifest and presigned URLs, or why not.

    Raises:
        botocore.exceptions.ClientError, pydantic.ValidationError: the shared cache failed (a 500, or a 503 when a
            retry may fix it: the worker falls back to the Hub).
    """
    asked = _authenticate(request, deps, CacheGrantRequest)
    if isinstance(asked, Outcome):
        return GrantAnswer(asked)
    doc = deps.store.get(asked.deployment_id)
    if doc is None:
        return GrantAnswer(Outcome.UNAUTHORIZED)
    refusal = _grant_refusal(doc, asked)
    if refusal:
        logger.warning("cache grant refused: %s", refusal)
        return GrantAnswer(Outcome.FORBIDDEN, reason=refusal)
    manifest = cache.manifest(asked.model_id, asked.revision) if cache is not None else None
    if cache is None or manifest is None:
        return GrantAnswer(Outcome.NOT_CACHED, reason=f"{asked.model_id}@{asked.revision} is not in the shared cache")
    ttl = deps.settings.cache_grant_ttl_s
    grant = {
        "schema_version": 1,
        "manifest": manifest.model_dump(),
        "urls": cache.presigned_urls(manifest, ttl),
        "expires_in_s": ttl,
    }
    logger.info("cache grant issued", extra={"files": len(manifest.files)})
    return GrantAnswer(Outcome.ACCEPTED, grant)


def _grant_refusal(doc: Deployment, asked: CacheGrantRequest) -> str | None:
    """Why the deployment may not read the shared cache for this request, or None when it may (pure)."""
    if doc.cache_scope is not CacheScope.SHARED or doc.shared_cache_granted is not True:
        return "the deployment was not granted the shared cache"
    if doc.status not in _GRANT_STATUSES:
        return f"no worker may start in status {doc.status.value}"
    if (asked.model_id, asked.revision) != (doc.hf_model_id, doc.model_commit_sha):
        return "the request names another model or revision than the deployment's"
    return None


def _authenticate(request: SignedReport, deps: StepDeps, body: type[_Body]) -> _Body | Outcome:
    """The body, if this deployment's worker signed it just now; else why not."""
    deployment_id = request.deployment_id
    try:  # what needs no secret first: junk never costs a read of deployment_secrets
        check_headers(request.headers, tolerance_s=deps.settings.callback_tolerance_s)
    except SignatureError as exc:
        logger.warning("phase report refused: %s", exc)
        return Outcome.UNAUTHORIZED
    secrets = deps.store.secrets(deployment_id) if DEPLOYMENT_ID.fullmatch(deployment_id) else None
    nonce = (secrets or {}).get("callback_nonce")
    if not secrets or not nonce:
        return Outcome.UNAUTHORIZED  # unknown, or deleted: the secret was erased with the credentials
    secret = deps.sealer.callback_secret(deployment_id, str(nonce))
    if not hmac.compare_digest(secret_hash(secret), str(secrets.get("callback_secret_hash", ""))):
        return Outcome.UNAUTHORIZED
    try:
        verify(secret, request.headers, request.body, tolerance_s=deps.settings.callback_tolerance_s)
        report = body.model_validate_json(request.body)
    except SignatureError as exc:
        logger.warning("phase report refused: %s", exc)
        return Outcome.UNAUTHORIZED
    except ValidationError:
        return Outcome.MALFORMED
    # Signed by this deployment's worker but about another deployment: refused like a forgery.
    return report if report.deployment_id == deployment_id else Outcome.UNAUTHORIZED


def _apply(report: PhaseReport, deps: StepDeps) -> None:
    deployment_id = report.deployment_id
    now = utcnow()
    progress = Progress(bytes_done=report.bytes_done or 0, bytes_total=report.bytes_total)

    def seen(doc: Deployment) -> None:
        doc.worker_last_report_at = now

    def downloading(doc: Deployment) -> None:
        seen(doc)
        doc.progress = progress

    def more_progress(doc: Deployment) -> bool:
        if doc.status is not Status.DOWNLOADING_MODEL:
            return False
        downloading(doc)
        return True

    try:
        if report.phase == "downloading_model":
            if deps.store.update(deployment_id, more_progress) is None:
                deps.transitions.move(
                    deployment_id, Status.DOWNLOADING_MODEL, "the worker is downloading the model", apply=downloading
                )
        elif report.phase == "loading_model":
            deps.transitions.move(deployment_id, Status.LOADING_MODEL, "the worker is loading the model", apply=seen)
        elif report.phase == "ready":
            _ready(report, deps, seen)
        else:
            _failed(report, deps)
    except IllegalTransitionError as exc:
        logger.info("late or repeated %s report ignored (%s)", report.phase, exc)


def _ready(report: PhaseReport, deps: StepDeps, seen: Callable[[Deployment], None]) -> None:
    # The durations and the load's details (LoRA adapters, speed settings): the user sees what the worker set up.
    reported = report.timings.model_dump() if report.timings else {}
    pool = pool_of_gpu_type(report.gpu_type_id)

    def record_ready(doc: Deployment) -> None:
        seen(doc)
        doc.timings = Timings.model_validate({**reported, "loaded_from_cache": report.loaded_from_cache})
        if pool:
            doc.gpu.pool_in_use = pool

    total = sum(reported.get(phase) or 0.0 for phase in ("download_s", "load_s", "warmup_s"))
    where = f" on {pool}" if pool else ""
    deps.transitions.move(
        report.deployment_id,
        Status.READY,
        f"ready{where}: the worker loaded the model and finished a warm-up inference ({total:.1f} s)",
        apply=record_ready,
    )


def _failed(report: PhaseReport, deps: StepDeps) -> None:
    doc = deps.store.get(report.deployment_id)
    if doc is None or doc.status not in PROVISIONING:
        # A serving deployment is not failed by one worker's start-up failure; Runpod replaces that worker.
        logger.warning("worker failure after provisioning ignored: %s", report.reason)
        return
    reason = worker_failure_reason(report.reason)
    fail_deployment(deps, report.deployment_id, reason.value, report.message or "the worker reported a failure")


def worker_failure_reason(reported: str | None) -> FailureReason:
    """The reason a worker's ``failed`` report counts as (pure): one a worker may give, else a failed load."""
    try:
        reason = FailureReason(reported or "")
    except ValueError:
        return FailureReason.MODEL_LOAD_FAILED
    return reason if reason in WORKER_FAILURE_REASONS else FailureReason.MODEL_LOAD_FAILED

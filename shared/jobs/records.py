"""Inference job records (``deployments/{id}/jobs/{job_id}``) and the usage counters their ends add to.

- A record holds what the job was (an input summary: sizes, steps, prompt length, never a prompt or image bytes),
  how it went (Runpod's job state, ``delay_ms``, ``execution_ms``, the error) and output references (URLs), never
  output bytes; ``expires_at`` is a Firestore TTL field (``JOB_RECORD_TTL_DAYS``).
- Usage is counted with Firestore increments only, so concurrent jobs never lose a count: ``requests`` when a job is
  submitted (in the commit that writes its record), the outcome, images, times and cost exactly once, when the
  record moves from a non-final to a final state. That move is a write with an ``update_time`` precondition in the
  same batch as the increments: of two instances that see the job end, one commits, the other finds it final.
- Counters live on the deployment document (``usage``: what ``GET /v1/deployments/{id}`` shows) and in one
  server-only document per deployment and UTC day (``usage_days``), which ``GET /v1/usage?from=&to=`` sums.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from google.cloud import firestore
from pydantic import BaseModel, Field

from shared.conditional import until_written
from shared.job_input import GenerateInput
from shared.models import Usage
from shared.page_tokens import decode_page_token, encode_page_token
from shared.runpod.client import JOB_FINAL_STATES, Job
from shared.store import DEPLOYMENTS

JOBS = "jobs"
JOB_ID_PATTERN = "[A-Za-z0-9][A-Za-z0-9-]{0,127}"  # Runpod's job ids (a UUID and a "-u1"-like suffix)
USAGE_DAYS = "usage_days"
# ``submitted_by`` of a job its deployment's owner (the Runpod key) submitted; an invoke key's job has the key id.
OWNER_SUBMITTER = "owner"
# Runpod's final states, each counted under one usage outcome.
OUTCOME = {"COMPLETED": "completed", "FAILED": "failed", "TIMED_OUT": "failed", "CANCELLED": "cancelled"}


def utcnow() -> datetime:
    return datetime.now(UTC)


class InputSummary(BaseModel):
    """What a job asked for, without the prompt's text or any image bytes."""

    prompt_chars: int
    negative_prompt_chars: int | None = None
    width: int | None = None
    height: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    num_images: int = 1
    output_format: str = "png"
    seed: int | None = None
    has_image: bool = False
    has_mask_image: bool = False
    strength: float | None = None

    @classmethod
    def of(cls, request: GenerateInput) -> InputSummary:
        return cls(
            prompt_chars=len(request.prompt),
            negative_prompt_chars=len(request.negative_prompt) if request.negative_prompt is not None else None,
            width=request.width,
            height=request.height,
            num_inference_steps=request.num_inference_steps,
            guidance_scale=request.guidance_scale,
            num_images=request.num_images,
            output_format=request.output_format,
            seed=request.seed,
            has_image=request.image is not None,
            has_mask_image=request.mask_image is not None,
            strength=request.strength,
        )


class JobFields(BaseModel):
    """What a job record and its public view (:class:`JobView`) have in common."""

    job_id: str
    deployment_id: str
    status: str
    input_summary: InputSummary
    delay_ms: int | None = None
    execution_ms: int | None = None
    estimated_cost_usd: float | None = None
    pool: str | None = None
    images: int = 0
    output_refs: list[str] = Field(default_factory=list)
    error: str | None = None
    # Where the job's end is announced (one signed delivery: shared.jobs.ends); checked like a deployment's webhook.
    webhook_url: str | None = None
    # Who submitted it: the invoke key's id, or "owner"; an invoke key sees only its own jobs. Records from before
    # the field existed count as the owner's.
    submitted_by: str = OWNER_SUBMITTER
    created_at: datetime
    finished_at: datetime | None = None
    expires_at: datetime


class JobRecord(JobFields):
    """The stored job. ``owner`` is the deployment's owner (tenant id); ``counted`` says its end is in ``usage``."""

    owner: str
    counted: bool = False

    @property
    def final(self) -> bool:
        return self.status in JOB_FINAL_STATES


class JobView(JobFields):
    """A job record as the API (and a job webhook) shows it; ``output`` only where the job's end was seen."""

    output: Any = None

    @classmethod
    def of(cls, record: JobRecord, output: Any = None) -> JobView:
        fields = {k: v for k, v in record.model_dump().items() if k in cls.model_fields}
        return cls.model_validate({**fields, "output": output})


class JobPricing(BaseModel):
    """The pool a deployment's workers run on and its serverless price (USD per second), for the cost estimate."""

    pool: str | None = None
    usd_per_second: float = 0.0


def output_facts(output: Any) -> tuple[int, list[str]]:
    """The number of images in a worker's output and the URLs among them (uploaded images), never the bytes."""
    images = output.get("images") if isinstance(output, dict) else None
    if not isinstance(images, list):
        return 0, []
    urls = [str(item["url"]) for item in images if isinstance(item, dict) and isinstance(item.get("url"), str)]
    return len(images), urls


def _error_text(error: Any) -> str | None:
    if error is None:
        return None
    text = error if isinstance(error, str) else json.dumps(error, default=str)
    return text[:1000]


def _day(at: datetime) -> str:
    return at.astimezone(UTC).date().isoformat()


class JobStore:
    """Job records and usage counters in Firestore (the client is built once per instance and passed in)."""

    def __init__(self, client: firestore.Client, ttl: timedelta) -> None:
        self._db = client
        self._ttl = ttl

    def _deployment(self, deployment_id: str) -> Any:
        return self._db.collection(DEPLOYMENTS).document(deployment_id)

    def _job_ref(self, deployment_id: str, job_id: str) -> Any:
        return self._deployment(deployment_id).collection(JOBS).document(job_id)

    def _add_usage(self, batch: Any, record: JobRecord, counts: dict[str, int | float], at: datetime) -> None:
        """Increments on the deployment's ``usage`` and on its usage document of the day ``at`` falls on."""
        counts = {k: v for k, v in counts.items() if v}
        if not counts:
            return
        batch.update(
            self._deployment(record.deployment_id), {f"usage.{k}": firestore.Increment(v) for k, v in counts.items()}
        )
        day = _day(at)
        batch.set(
            self._db.collection(USAGE_DAYS).document(f"{record.deployment_id}_{day}"),
            {
                "owner": record.owner,
                "deployment_id": record.deployment_id,
                "day": day,
                "expires_at": at + timedelta(days=400),
                **{k: firestore.Increment(v) for k, v in counts.items()},
            },
            merge=True,
        )

    def record_submitted(
        self,
        deployment_id: str,
        owner: str,
        job: Job,
        summary: InputSummary,
        pricing: JobPricing,
        *,
        webhook_url: str | None = None,
        submitted_by: str = OWNER_SUBMITTER,
    ) -> JobRecord:
        """Write the record of a job Runpod accepted and count the request, in one commit; a job that is final
        already (a runsync that finished) is counted as ended in the same commit."""
        now = utcnow()
        record = JobRecord(
            job_id=job.id,
            deployment_id=deployment_id,
            owner=owner,
            status=job.status,
            input_summary=summary,
            webhook_url=webhook_url,
            submitted_by=submitted_by,
            created_at=now,
            expires_at=now + self._ttl,
        )
        counts: dict[str, int | float] = {"requests": 1}
        if job.final:
            record, end_counts = _ended(record, job, pricing, now)
            counts.update(end_counts)
        batch = self._db.batch()
        batch.create(self._job_ref(deployment_id, job.id), record.model_dump())
        self._add_usage(batch, record, counts, now)
        batch.commit()
        return record

    def get(self, deployment_id: str, job_id: str) -> JobRecord | None:
        snap = self._job_ref(deployment_id, job_id).get()
        return JobRecord.model_validate(snap.to_dict()) if snap.exists else None

    def observe(self, deployment_id: str, job_id: str, job: Job, pricing: JobPricing) -> JobRecord | None:
        """Fold what Runpod said about the job into its record; the move to a final state is counted once.

        Returns the record as it stands afterwards, or None when there is no such record.

        Raises:
            RetryableError: other observers kept writing it first (shared.conditional).
        """
        ref = self._job_ref(deployment_id, job_id)

        def attempt() -> JobRecord | None:
            snap = ref.get()
            if not snap.exists:
                return None
            record = JobRecord.model_validate(snap.to_dict())
            if record.final or (record.status == job.status and not job.final):
                return record
            now = utcnow()
            counts: dict[str, int | float] = {}
            if job.final:
                record, counts = _ended(record, job, pricing, now)
            else:
                record = record.model_copy(update={"status": job.status, "delay_ms": job.delay_time})
            batch = self._db.batch()
            batch.update(ref, record.model_dump(), option=self._db.write_option(last_update_time=snap.update_time))
            self._add_usage(batch, record, counts, now)
            batch.commit()  # a conflict: another instance wrote it first, and the next attempt reads what it wrote
            return record

        return until_written(attempt, f"job {job_id}")

    def list(
        self, deployment_id: str, limit: int, page_token: str | None, submitted_by: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        """Newest first, cursor-paginated (an opaque token); only the jobs ``submitted_by`` submitted, if given.

        Raises:
            InvalidPageTokenError: a token this API did not issue.
        """
        query = self._deployment(deployment_id).collection(JOBS)
        if submitted_by is not None:
            query = query.where(filter=firestore.FieldFilter("submitted_by", "==", submitted_by))
        query = query.order_by("created_at", direction=firestore.Query.DESCENDING).order_by(
            "job_id", direction=firestore.Query.DESCENDING
        )
        if page_token:
            created_at, last_id = decode_page_token(page_token, JOB_ID_PATTERN)
            query = query.start_after({"created_at": created_at, "job_id": last_id})
        records = [JobRecord.model_validate(snap.to_dict()) for snap in query.limit(limit + 1).stream()]
        page = records[:limit]
        last = page[-1] if len(records) > limit and page else None
        token = encode_page_token(last.created_at, last.job_id) if last is not None else None
        return page, token

    def usage_by_deployment(self, owner: str, first: date, last: date) -> dict[str, Usage]:
        """The owner's counters per deployment over the UTC days ``first``..``last`` (inclusive)."""
        query = (
            self._db.collection(USAGE_DAYS)
            .where(filter=firestore.FieldFilter("owner", "==", owner))
            .where(filter=firestore.FieldFilter("day", ">=", first.isoformat()))
            .where(filter=firestore.FieldFilter("day", "<=", last.isoformat()))
        )
        totals: dict[str, dict[str, float]] = {}
        for snap in query.stream():
            data = snap.to_dict() or {}
            into = totals.setdefault(str(data["deployment_id"]), {})
            for name in Usage.model_fields:
                into[name] = into.get(name, 0) + (data.get(name) or 0)
        return {dep: Usage.model_validate(_usage_values(values)) for dep, values in totals.items()}


def _usage_values(values: dict[str, float]) -> dict[str, Any]:
    return {k: (v if k == "estimated_cost_usd" else int(v)) for k, v in values.items()}


def _ended(record: JobRecord, job: Job, pricing: JobPricing, now: datetime) -> tuple[JobRecord, dict[str, int | float]]:
    """The record of a job that reached a final state and the counts its end adds."""
    images, refs = output_facts(job.output) if job.status == "COMPLETED" else (0, [])
    execution_ms = job.execution_time or 0
    cost = execution_ms / 1000 * pricing.usd_per_second
    ended = record.model_copy(
        update={
            "status": job.status,
            "delay_ms": job.delay_time,
            "execution_ms": job.execution_time,
            "estimated_cost_usd": cost,
            "pool": pricing.pool,
            "images": images,
            "output_refs": refs,
            "error": _error_text(job.error),
            "finished_at": now,
            "counted": True,
        }
    )
    counts: dict[str, int | float] = {
        OUTCOME.get(job.status, "failed"): 1,
        "images": images,
        "execution_ms": execution_ms,
        "delay_ms": job.delay_time or 0,
        "estimated_cost_usd": cost,
    }
    return ended, counts

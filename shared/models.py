"""The deployment API's schemas: what a client sends and what it may read (the stored document is
shared.document; the URL checks, shared.public_urls).

Validation is strict (unknown fields, wrong types and out-of-range values are refused, never coerced), because
a deployment that silently differs from what was asked costs GPU money.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.gpu import GpuTier
from shared.job_input import Task
from shared.lifecycle import Status
from shared.model_tasks import MAX_LORAS, LoraSpec
from shared.public_urls import check_public_url

# Hub repo ids: "name" or "org/name"; each part 1-96 of letters, digits, '.', '_', '-', starting and ending with a
# letter, digit or '_' (the Hub's word boundaries), never holding '..' or '--'. One pattern validates and documents.
_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
HF_MODEL_ID_PATTERN = rf"^(?!.*(?:\.\.|--))(?:{_PART}/)?{_PART}$"
REVISION_PATTERN = r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$"
_S3_URL = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$")
DEFAULT_TTL_MIN_MINUTES = 10  # TTL_MIN_MINUTES's default (shared.config)
_SECRET_LIMITS = {"hf_token": 512, "user_aws_access_key_id": 256, "user_aws_secret_access_key": 256}


# Why a deployment was deleted: by its owner, its TTL, its idle rule, or because it had failed.
DeleteReason = Literal["user", "ttl", "idle", "failed"]
# Why a deployment was last stopped: its owner (POST .../stop), or its budget (max_cost_usd reached).
StopReason = Literal["user", "budget"]
MAX_BUDGET_USD = 1_000_000.0


class CacheScope(StrEnum):
    OFF = "off"
    SHARED = "shared"
    PRIVATE = "private"


def validate_hf_model_id(value: str) -> str:
    """Hub repo id syntax: ``name`` or ``org/name``; see the Hub's own rules."""
    if not re.fullmatch(HF_MODEL_ID_PATTERN, value):
        raise ValueError(
            "must be 'name' or 'org/name': letters, digits, '-', '_', '.'; at most 96 characters per part; "
            "not starting or ending with '-' or '.'; no '..' or '--'"
        )
    return value


def _check_secret(value: Any, info: ValidationInfo) -> Any:
    """Length limits for secrets, in characters (SecretStr's own constraint would say "items")."""
    if isinstance(value, str):
        limit = _SECRET_LIMITS[str(info.field_name)]
        if not value:
            raise ValueError("must not be empty (leave the field out instead)")
        if len(value) > limit:
            raise ValueError(f"must be at most {limit} characters")
    return value


Secret = Annotated[SecretStr, BeforeValidator(_check_secret)]


class CreateDeploymentRequest(BaseModel):
    """Body of ``POST /v1/deployments``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    hf_model_id: Annotated[
        str,
        Field(
            min_length=1,
            max_length=193,
            examples=["stabilityai/sd-turbo"],
            json_schema_extra={"pattern": HF_MODEL_ID_PATTERN},
        ),
    ]
    revision: Annotated[str, Field(min_length=1, max_length=255, json_schema_extra={"pattern": REVISION_PATTERN})] = (
        "main"
    )
    gpu_tier: GpuTier | None = None
    hf_token: Secret | None = Field(default=None, json_schema_extra={"minLength": 1, "maxLength": 512})
    user_webhook_url: Annotated[str, Field(max_length=2048)] | None = None
    # Statuses that become webhook deliveries; unset: ready, failed, deleted (shared/webhooks/payload.py).
    webhook_events: Annotated[list[Status], Field(min_length=1, max_length=len(Status))] | None = None
    cache_scope: CacheScope = CacheScope.OFF
    user_s3_url: Annotated[str, Field(max_length=1024)] | None = None
    user_aws_access_key_id: Secret | None = Field(default=None, json_schema_extra={"minLength": 1, "maxLength": 256})
    user_aws_secret_access_key: Secret | None = Field(
        default=None, json_schema_extra={"minLength": 1, "maxLength": 256}
    )
    user_aws_endpoint_url: Annotated[str, Field(max_length=2048)] | None = None
    user_aws_region: Annotated[str, Field(pattern=r"^[a-z0-9-]{2,32}$")] | None = None
    # Where the worker writes generated images (returned as presigned GET URLs), with the user_aws_* keys: its own
    # bucket, or the private cache's (issue 11). Unset, images come back inline.
    output_s3_url: Annotated[str, Field(max_length=1024)] | None = None
    workers_min: Annotated[int, Field(ge=0, le=10)] = 0
    workers_max: Annotated[int, Field(ge=1, le=10)] = 1
    idle_timeout_seconds: Annotated[int, Field(ge=5, le=3600)] = 120
    # The least of both is TTL_MIN_MINUTES (from the validation context; see _at_least_the_minimum).
    ttl_minutes: Annotated[int, Field(ge=1, le=10080)] | None = None
    idle_delete_minutes: Annotated[int, Field(ge=1, le=10080)] | None = None
    # What the deployment serves (checked against the model's pipeline before any Runpod call) and the LoRA
    # adapters fused into it (issue 13).
    task: Task = "text_to_image"
    loras: Annotated[list[LoraSpec], Field(max_length=MAX_LORAS)] = Field(default_factory=list)
    # A budget (issue 18): at 80 % of it in usage.estimated_cost_usd a budget_warning, at 100 % the deployment is
    # stopped (stop_reason "budget") with a budget_exhausted; PATCH /v1/deployments/{id} raises or clears it.
    max_cost_usd: Annotated[float, Field(gt=0, le=MAX_BUDGET_USD)] | None = None

    @field_validator("hf_model_id")
    @classmethod
    def _hub_id(cls, value: str) -> str:
        return validate_hf_model_id(value)

    @field_validator("revision")
    @classmethod
    def _revision(cls, value: str) -> str:
        if not re.fullmatch(REVISION_PATTERN, value):
            raise ValueError("must be a branch, tag or commit sha (letters, digits, '.', '_', '-', '/'; no '..')")
        return value

    @field_validator("user_webhook_url", "user_aws_endpoint_url")
    @classmethod
    def _public_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        allow = bool((info.context or {}).get("allow_http_loopback", False))
        return check_public_url(value, allow_http_loopback=allow, field=str(info.field_name))

    @field_validator("user_s3_url", "output_s3_url")
    @classmethod
    def _s3_url(cls, value: str | None) -> str | None:
        if value is not None and not _S3_URL.fullmatch(value):
            raise ValueError("must look like s3://bucket/optional/prefix")
        return value

    @field_validator("ttl_minutes", "idle_delete_minutes")
    @classmethod
    def _at_least_the_minimum(cls, value: int | None, info: ValidationInfo) -> int | None:
        least = int((info.context or {}).get("ttl_min_minutes", DEFAULT_TTL_MIN_MINUTES))
        if value is not None and value < least:
            raise ValueError(f"{info.field_name} must be at least {least} (TTL_MIN_MINUTES)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CreateDeploymentRequest:
        if self.workers_min > self.workers_max:
            raise ValueError("workers_min must not exceed workers_max")
        if self.webhook_events is not None and self.user_webhook_url is None:
            raise ValueError("webhook_events needs user_webhook_url")
        private_fields = ("user_s3_url", "user_aws_access_key_id", "user_aws_secret_access_key")
        key_fields = (
            "user_aws_access_key_id",
            "user_aws_secret_access_key",
            "user_aws_endpoint_url",
            "user_aws_region",
        )
        if self.output_s3_url is not None:
            missing = [name for name in key_fields[:2] if getattr(self, name) is None]
            if missing:
                raise ValueError(f"output_s3_url requires {', '.join(missing)}")
        if self.cache_scope is CacheScope.PRIVATE:
            missing = [name for name in private_fields if getattr(self, name) is None]
            if missing:
                raise ValueError(f"cache_scope 'private' requires {', '.join(missing)}")
        else:
            # The keys also serve an output bucket; the cache's URL only the private cache.
            allowed = key_fields if self.output_s3_url is not None else ()
            given = [
                name
                for name in (*private_fields, "user_aws_endpoint_url", "user_aws_region")
                if getattr(self, name) and name not in allowed
            ]
            if given:
                raise ValueError(f"{', '.join(given)} only apply to cache_scope 'private' (or output_s3_url)")
        return self


class SealedCredentials(BaseModel):
    """What is sealed per deployment; never stored or sent in the clear."""

    runpod_api_key: str
    hf_token: str | None = None
    user_aws_access_key_id: str | None = None
    user_aws_secret_access_key: str | None = None


class ErrorInfo(BaseModel):
    code: str
    message: str


class Progress(BaseModel):
    bytes_done: int = 0
    bytes_total: int | None = None


class Timings(BaseModel):
    download_s: float | None = None
    load_s: float | None = None
    warmup_s: float | None = None
    loaded_from_cache: bool | None = None
    lora_s: float | None = None
    compile_s: float | None = None
    loras: list[dict[str, Any]] | None = None
    settings: dict[str, Any] | None = None


class SkippedPoolView(BaseModel):
    """A GPU pool provisioning did not choose first, and why (too small, below the tier, no availability)."""

    pool: str
    reason: str


class Usage(BaseModel):
    """What a deployment's jobs used, counted with Firestore increments (exact under concurrent jobs).

    ``estimated_cost_usd`` is execution time x the serverless price of the pool the worker ran on, from Runpod's
    catalog: an estimate; Runpod's bill is the truth.
    """

    requests: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    images: int = 0
    execution_ms: int = 0
    delay_ms: int = 0
    estimated_cost_usd: float = 0.0


class DeploymentView(BaseModel):
    """The public view of a deployment: what ``GET /v1/deployments/{id}`` returns. No secrets, ever."""

    deployment_id: str
    status: Status
    hf_model_id: str
    revision: str
    model_commit_sha: str | None = None
    gpu_tier: GpuTier | None = None
    cache_scope: CacheScope
    workers_min: int
    workers_max: int
    idle_timeout_seconds: int
    ttl_minutes: int | None = None
    idle_delete_minutes: int | None = None
    delete_reason: DeleteReason | None = None
    stopped_at: datetime | None = None
    stop_reason: StopReason | None = None
    max_cost_usd: float | None = None
    user_webhook_url: str | None = None
    output_s3_url: str | None = None
    task: Task = "text_to_image"
    loras: list[dict[str, Any]] = Field(default_factory=list)
    webhook_events: list[Status] | None = None
    vram_estimate_gb: float | None = None
    gpu_candidates: list[str] = Field(default_factory=list)
    gpu_skipped: list[SkippedPoolView] = Field(default_factory=list)
    gpu_pool: str | None = None
    endpoint_id: str | None = None
    endpoint_url: str | None = None
    progress: Progress | None = None
    timings: Timings | None = None
    error: ErrorInfo | None = None
    phase_timestamps: dict[str, datetime] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None


class UpdateDeploymentRequest(BaseModel):
    """Body of ``PATCH /v1/deployments/{id}``: the budget, raised, lowered or cleared (null)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_cost_usd: Annotated[float, Field(gt=0, le=MAX_BUDGET_USD)] | None = Field(
        description="the deployment's budget in USD of usage.estimated_cost_usd; null clears it"
    )


class CreateDeploymentResponse(BaseModel):
    deployment_id: str
    status: Literal["validating"] = "validating"
    status_url: str
    stream_url: str
    created_at: datetime


class DeleteDeploymentResponse(BaseModel):
    deployment_id: str
    status: Literal["deleting", "deleted"]


class LogLine(BaseModel):
    time: datetime | None = None
    level: str | None = None
    message: str | None = None


class DeploymentLogs(BaseModel):
    """What ``GET /v1/deployments/{id}/logs`` returns: the last lines of the event log, oldest first."""

    deployment_id: str
    events: list[LogLine]


class DeploymentList(BaseModel):
    deployments: list[DeploymentView]
    next_page_token: str | None = None
    counts_by_status: dict[str, int]


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None
    request_id: str


class ErrorResponse(BaseModel):
    error: ErrorBody

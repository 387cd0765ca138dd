"""The job API's request and answer models (the OpenAPI document is built from them, shared.intake.openapi)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from shared.gpu import GpuTier
from shared.jobs.invoke_keys import InvokeKey
from shared.jobs.records import JobView
from shared.models import Usage
from shared.public_urls import check_public_url

WAIT_MS_DEFAULT = 90_000
WAIT_MS_MIN, WAIT_MS_MAX = 1_000, 300_000


class RunRequest(BaseModel):
    """Body of ``POST /v1/deployments/{id}/run`` and ``/runsync``: the job input (the worker's ``GenerateInput``)
    and where to announce the job's end."""

    model_config = ConfigDict(extra="forbid", strict=True)

    input: dict[str, Any] = Field(description="the job input, validated with the worker's own input model")
    webhook_url: Annotated[str, Field(max_length=2048)] | None = Field(
        None,
        description="gets one signed delivery (job.completed, job.failed, job.timed_out or job.cancelled) when the "
        "job ends, with the tenant's webhook secret; https, public addresses only",
    )

    @field_validator("webhook_url")
    @classmethod
    def _public_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        allow = bool((info.context or {}).get("allow_http_loopback", False))
        return check_public_url(value, allow_http_loopback=allow, field="webhook_url")


class JobMetrics(BaseModel):
    delay_ms: int | None = None
    execution_ms: int | None = None
    estimated_cost_usd: float | None = None
    pool: str | None = None


class JobAccepted(BaseModel):
    """A job that runs on: poll ``status_url``."""

    job_id: str
    status: str
    status_url: str


class JobResult(BaseModel):
    """A job that ended within a runsync's wait."""

    job_id: str
    status: str
    output: Any = None
    error: str | None = None
    metrics: JobMetrics
    status_url: str


class JobList(BaseModel):
    jobs: list[JobView]
    next_page_token: str | None = None


class InvokeKeyCreated(BaseModel):
    """The new key: ``key`` is shown this once."""

    key_id: str
    key: str
    prefix: str
    deployment_id: str
    created_at: datetime


class InvokeKeyList(BaseModel):
    keys: list[InvokeKey]


class DeploymentUsage(BaseModel):
    deployment_id: str
    usage: Usage


class UsageReport(BaseModel):
    """``GET /v1/usage``: the caller's counters per deployment and overall, over UTC days ``from_day``..``to_day``.
    Costs are estimates (execution time x the pool's serverless price); Runpod's bill is the truth."""

    from_day: date
    to_day: date
    deployments: list[DeploymentUsage]
    total: Usage


class GpuPoolView(BaseModel):
    pool: str
    vram_gb: int
    tier: GpuTier
    usd_per_second: float
    usd_per_hour: float
    available: bool | None = Field(description="from Runpod's catalog; null when unknown (the static table)")
    gpu_type_ids: list[str]


class GpuList(BaseModel):
    pools: list[GpuPoolView]

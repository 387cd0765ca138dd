"""The stored deployment document (``deployments/{id}``), typed: what every step reads and writes.

- Sub-models hold what belongs together: the Runpod resources, the GPU plan, the readiness watch.
- Unknown stored fields survive a read-modify-write (``extra="allow"``): a newer release may add fields, and an
  older instance running beside it must not erase them.
- The public view is derived from it (:meth:`Deployment.view`); neither carries a secret (the sealed credentials
  live in a server-only collection), and a test walks both models to keep it so.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.gpu import GpuTier
from shared.job_input import Task
from shared.lifecycle import Status
from shared.model_tasks import LoraSpec, ResolvedLora
from shared.models import (
    CacheScope,
    DeleteReason,
    DeploymentView,
    ErrorInfo,
    Progress,
    SkippedPoolView,
    StopReason,
    Timings,
    Usage,
)


class _Stored(BaseModel):
    model_config = ConfigDict(extra="allow", validate_assignment=True)


class RunpodResources(_Stored):
    """What exists on Runpod for the deployment, each id recorded before the next step."""

    endpoint_id: str | None = None
    endpoint_url: str | None = None
    warmup_job_id: str | None = None
    torn_down_at: datetime | None = None


class GpuPlan(_Stored):
    """Pools ranked for the VRAM estimate, the window the endpoint uses now, and what was left out and why."""

    ranked: list[str] = Field(default_factory=list)
    window: list[str] = Field(default_factory=list)
    skipped: list[SkippedPoolView] = Field(default_factory=list)
    switches: int = 0
    pool_in_use: str | None = None


class IdleWatch(_Stored):
    """The sweep's memory for ``idle_delete_minutes``: the endpoint's job count last seen, and since when it stood."""

    jobs_seen: int | None = None
    active_at: datetime | None = None


class BudgetWatch(_Stored):
    """The budget's memory: ``generation`` grows with each change of ``max_cost_usd`` (PATCH), and ``warned`` /
    ``exhausted`` hold the generation whose 80 % / 100 % crossing was announced, so each crossing is announced once."""

    generation: int = 0
    warned: int | None = None
    exhausted: int | None = None


class ReadinessWatch(_Stored):
    """The watchdog's memory: the last check done, when, and since when workers wait for capacity. ``generation``
    is the start it watches (0: the first provisioning; each start of a stopped deployment watches anew)."""

    generation: int = 0
    check: int = -1
    last_check_at: datetime | None = None
    throttled_since: datetime | None = None


# Flat fields of documents written before the sub-models existed: old name -> (sub-model, new name).
class Deployment(_Stored):
    deployment_id: str
    owner: str
    status: Status
    hf_model_id: str
    revision: str = "main"
    gpu_tier: GpuTier | None = None
    cache_scope: CacheScope = CacheScope.OFF
    user_s3_url: str | None = None
    user_aws_endpoint_url: str | None = None
    user_aws_region: str | None = None
    output_s3_url: str | None = None  # the output bucket (issue 11), written with the sealed user_aws_* keys
    has_hf_token: bool = False
    workers_min: int = 0
    workers_max: int = 1
    idle_timeout_seconds: int = 120
    ttl_minutes: int | None = None
    idle_delete_minutes: int | None = None
    user_webhook_url: str | None = None
    webhook_events: list[Status] | None = None  # None: the defaults (ready, failed, deleted)
    task: Task = "text_to_image"
    loras: list[LoraSpec] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None
    phase_timestamps: dict[Status, datetime] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    # Set by the model check.
    model_commit_sha: str | None = None
    pipeline_class: str | None = None
    vram_estimate_gb: float | None = None
    shared_cache_granted: bool | None = None
    resolved_loras: list[ResolvedLora] = Field(default_factory=list)  # each adapter pinned to a commit and file
    runpod: RunpodResources = Field(default_factory=RunpodResources)
    gpu: GpuPlan = Field(default_factory=GpuPlan)
    readiness: ReadinessWatch = Field(default_factory=ReadinessWatch)
    # Reported by the worker.
    progress: Progress | None = None
    timings: Timings | None = None
    worker_last_report_at: datetime | None = None
    deleted_at: datetime | None = None
    # Cost control: why it was deleted (user, ttl, idle, failed), when it was last stopped and started again.
    delete_reason: DeleteReason | None = None
    stopped_at: datetime | None = None
    stop_reason: StopReason | None = None
    started_at: datetime | None = None
    idle: IdleWatch = Field(default_factory=IdleWatch)
    # Its budget (usage.estimated_cost_usd) and what was announced of it (shared.deployments.budget).
    max_cost_usd: float | None = None
    budget: BudgetWatch = Field(default_factory=BudgetWatch)
    # Whether it holds one of its tenant's slots (MAX_LIVE_DEPLOYMENTS_PER_TENANT, MAX_WORKERS_MIN_PER_TENANT): set
    # by the create's commit, cleared (and the slot given back, in the same commit) when it first becomes failed or
    # deleted (shared.store). Server bookkeeping, not in the view.
    tenant_slot: bool = False
    # The number of the last line of the event log (deployments/{id}/events/{n}).
    event_seq: int = 0
    # What its jobs used: changed only by Firestore increments (shared.jobs.records), never by read-modify-write.
    usage: Usage = Field(default_factory=Usage)

    @classmethod
    def from_firestore(cls, data: dict[str, Any]) -> Deployment:
        return cls.model_validate(data)

    def to_firestore(self) -> dict[str, Any]:
        """The fields as Firestore stores them: datetimes stay timestamps, enums become their values."""
        return _plain(self.model_dump())

    def reached(self, status: Status) -> bool:
        """Whether the deployment was ever in ``status``."""
        return status in self.phase_timestamps

    def may_exist_on_runpod(self) -> bool:
        """Whether it ever reached ``creating_endpoint``; before it, nothing of it exists on Runpod."""
        return self.reached(Status.CREATING_ENDPOINT)

    def view(self) -> DeploymentView:
        """The public view: what ``GET /v1/deployments/{id}`` answers and lifecycle events carry."""
        fields = {name: value for name, value in self.model_dump().items() if name in DeploymentView.model_fields}
        return DeploymentView.model_validate(
            {
                **fields,
                "gpu_candidates": self.gpu.window,
                "gpu_skipped": self.gpu.skipped,
                "gpu_pool": self.gpu.pool_in_use,
                "endpoint_id": self.runpod.endpoint_id,
                "endpoint_url": self.runpod.endpoint_url,
                "phase_timestamps": {status.value: at for status, at in self.phase_timestamps.items()},
            }
        )


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value

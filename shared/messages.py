"""Message schemas, one per topic or queue. They evolve additively: new optional fields, never renames.

Messages carry ids, never secrets: the worker and the functions read credentials from the sealed store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class Message(BaseModel):
    """A message on a topic or a queue (or a worker's report): one model per kind, evolving only by new optional
    fields (``schema_version`` says which shape a producer wrote)."""

    model_config = ConfigDict(extra="ignore")  # additive evolution: newer producers may add fields

    schema_version: int = 1


class DeploymentRequested(Message):
    """Topic ``deployment-requested``: provision this deployment."""

    deployment_id: str
    requested_at: datetime


class DeploymentDeleteRequested(Message):
    """Topic ``deployment-delete-requested``: tear this deployment down."""

    deployment_id: str
    requested_at: datetime
    reason: Literal["user", "ttl", "idle", "failed", "orphan"] = "user"


class SweepItem(Message):
    """Queue ``sweep``: one deployment (or, for ``orphans``, one tenant through one of its deployments) that the
    scheduled sweep found due."""

    deployment_id: str
    action: Literal["timeout", "retry_delete", "ttl", "idle", "orphans"]
    run_at: datetime


class ReadinessCheck(Message):
    """Queue ``readiness``: look at the endpoint of a silent worker; ``generation`` names the start it watches."""

    deployment_id: str
    check: int = 0
    generation: int = 0


class JobCheck(Message):
    """Queue ``job-watch``: look at one inference job its answer did not see end (check ``check``, 0-based)."""

    deployment_id: str
    job_id: str
    check: int = 0
    # A check Runpod's call on the job's end asked for, ahead of the schedule: it never schedules the next one.
    nudge: bool = False


class PhaseTimings(BaseModel):
    # A worker adds the load's details (its LoRA adapters, the effective speed settings); the callback function
    # records what shared.models.Timings names on the deployment.
    model_config = ConfigDict(extra="allow")

    download_s: float | None = None
    load_s: float | None = None
    warmup_s: float | None = None
    # Issue 13: parts of load_s, the fused LoRA adapters and the worker's effective speed settings.
    lora_s: float | None = None
    compile_s: float | None = None
    loras: list[dict[str, Any]] | None = None
    settings: dict[str, Any] | None = None


class PhaseReport(Message):
    """A worker's phase report to the callback function (``POST $VISGATE_CALLBACK_URL``); see docs/contracts.md.

    The worker builds its reports from this model too (worker/reporter.py; the image bakes this module), so the two
    sides cannot drift. ``reason`` is a :class:`shared.lifecycle.FailureReason` value, kept a plain string here so
    that a newer worker's reason still parses (the callback counts an unknown one as ``model_load_failed``).
    """

    deployment_id: str
    phase: Literal["downloading_model", "loading_model", "ready", "failed"]
    bytes_done: int | None = None
    bytes_total: int | None = None
    timings: PhaseTimings | None = None
    loaded_from_cache: bool | None = None
    reason: str | None = None
    message: str | None = None
    # The GPU type the worker runs on (Runpod's RUNPOD_GPU_NAME), so the user can see which pool served it.
    gpu_type_id: str | None = None

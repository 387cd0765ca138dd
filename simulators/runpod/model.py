"""Records the Runpod simulator keeps (accounts, templates, endpoints, jobs, workers, scenario) and their JSON views.

Views use Runpod's field names (camelCase), so the GraphQL layer, the data plane and ``/_sim/state`` share them.
"""

from __future__ import annotations

import math
import secrets
import string
import sys
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from simulators.runpod.catalog import GPU_TYPES_BY_ID, POOLS_BY_ID

_ID_ALPHABET = string.ascii_lowercase + string.digits
DEFAULT_WORKER_COMMAND: tuple[str, ...] = (sys.executable, "-m", "simulators.runpod.test_worker")
WORKER_MODES = ("process", "instant")
WORKER_REPORTS = ("ready", "failed", "out_of_memory")
SCALER_TYPES = ("QUEUE_DELAY", "REQUEST_COUNT")
MAX_GPU_COUNT = 8


def new_id(length: int = 14) -> str:
    """A Runpod-looking resource id: lowercase letters and digits."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def new_job_id() -> str:
    """A Runpod-looking job id (a uuid with the region suffix Runpod appends)."""
    return f"{uuid.uuid4()}-u1"


class SimError(Exception):
    """A refused request; ``status`` is the HTTP status the data plane answers with."""

    status = 400


class NotFoundError(SimError):
    """Unknown endpoint, job or worker."""

    status = 404


class UnauthorizedError(SimError):
    """Missing or wrong API key."""

    status = 401


class UnknownWorkerError(NotFoundError):
    """A worker API call from a worker the endpoint no longer has."""


class ControlPlaneError(SimError):
    """A GraphQL mutation or query Runpod would refuse (reported as a GraphQL error, HTTP 200)."""


class JobStatus(StrEnum):
    """Runpod's job states."""

    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"


TERMINAL_JOB_STATES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT})


class WorkerPhase(StrEnum):
    """Where a worker is in its life; /health splits ``ready`` into idle and running by its jobs."""

    THROTTLED = "throttled"
    INITIALIZING = "initializing"
    READY = "ready"
    UNHEALTHY = "unhealthy"


class WorkerRunner(Protocol):
    """What runs a worker: a real process or an in-process thread."""

    def poll(self) -> int | None:
        """The exit code once the worker has ended, else None."""

    def stop(self) -> None:
        """End the worker and wait for it (bounded)."""


@dataclass
class Account:
    """One Runpod account, known by its API key."""

    id: str
    api_key: str
    email: str


@dataclass
class Template:
    """A pod template (``saveTemplate``)."""

    id: str
    account_id: str
    name: str
    image_name: str
    docker_args: str = ""
    container_disk_in_gb: int = 10
    volume_in_gb: int = 0
    volume_mount_path: str = "/workspace"
    ports: str = ""
    env: dict[str, str] = field(default_factory=dict)
    is_serverless: bool = False
    start_ssh: bool = True
    start_jupyter: bool = False
    is_public: bool = False
    readme: str = ""
    container_registry_auth_id: str = ""

    def view(self) -> dict[str, Any]:
        """The ``PodTemplate`` GraphQL object."""
        return {
            "id": self.id,
            "name": self.name,
            "imageName": self.image_name,
            "dockerArgs": self.docker_args,
            "containerDiskInGb": self.container_disk_in_gb,
            "volumeInGb": self.volume_in_gb,
            "volumeMountPath": self.volume_mount_path,
            "ports": self.ports,
            "env": env_view(self.env),
            "isServerless": self.is_serverless,
            "startSsh": self.start_ssh,
            "startJupyter": self.start_jupyter,
            "isPublic": self.is_public,
            "readme": self.readme,
            "containerRegistryAuthId": self.container_registry_auth_id,
        }


@dataclass
class EndpointConfig:
    """Everything ``saveEndpoint`` sets; an update replaces all of it (omitted fields go back to these defaults)."""

    name: str
    template_id: str
    gpu_ids: str
    network_volume_id: str = ""
    locations: str = ""
    idle_timeout: int = 5
    scaler_type: str = "QUEUE_DELAY"
    scaler_value: int = 4
    workers_min: int = 0
    workers_max: int = 3
    flashboot: bool = False
    gpu_count: int = 1
    execution_timeout_ms: int = 600_000
    allowed_cuda_versions: str = ""

    def pools(self) -> list[str]:
        """The pools workers may be placed in, in priority order (``-<gpu type>`` exclusions left out)."""
        return [part for part in split_ids(self.gpu_ids) if not part.startswith("-")]

    def validate(self) -> None:
        """Refuse what Runpod refuses."""
        if not self.name:
            raise ControlPlaneError("Endpoint name is required")
        if not self.gpu_ids or not self.pools():
            raise ControlPlaneError("gpuIds must name at least one GPU pool")
        for part in split_ids(self.gpu_ids):
            if part.startswith("-") and part[1:] not in GPU_TYPES_BY_ID:
                raise ControlPlaneError(f"Unknown GPU type in gpuIds: {part[1:]}")
            if not part.startswith("-") and part not in POOLS_BY_ID:
                raise ControlPlaneError(f"Unknown GPU pool in gpuIds: {part}")
        if self.workers_min < 0 or self.workers_max < 0:
            raise ControlPlaneError("workersMin and workersMax must not be negative")
        if self.workers_min > self.workers_max:
            raise ControlPlaneError("workersMin cannot be greater than workersMax")
        if self.scaler_type not in SCALER_TYPES:
            raise ControlPlaneError(f"scalerType must be one of {', '.join(SCALER_TYPES)}")
        if self.scaler_value < 1 or self.idle_timeout < 1 or self.execution_timeout_ms < 1:
            raise ControlPlaneError("scalerValue, idleTimeout and executionTimeoutMs must be positive")
        if not 1 <= self.gpu_count <= MAX_GPU_COUNT:
            raise ControlPlaneError(f"gpuCount must be between 1 and {MAX_GPU_COUNT}")


@dataclass
class Endpoint:
    """A serverless endpoint, its workers and its queue."""

    id: str
    account_id: str
    config: EndpointConfig
    ai_key: str
    created_at: str
    version: int = 1
    workers: dict[str, Worker] = field(default_factory=dict)
    queue: list[str] = field(default_factory=list)
    retried: int = 0

    def view(self, template: Template | None) -> dict[str, Any]:
        """The ``Endpoint`` GraphQL object."""
        cfg = self.config
        return {
            "id": self.id,
            "name": cfg.name,
            "templateId": cfg.template_id,
            "template": template.view() if template else None,
            "gpuIds": cfg.gpu_ids,
            "networkVolumeId": cfg.network_volume_id,
            "networkVolume": None,
            "locations": cfg.locations,
            "idleTimeout": cfg.idle_timeout,
            "scalerType": cfg.scaler_type,
            "scalerValue": cfg.scaler_value,
            "workersMin": cfg.workers_min,
            "workersMax": cfg.workers_max,
            "workersStandby": cfg.workers_min,
            "gpuCount": cfg.gpu_count,
            "flashBootType": "FLASHBOOT" if cfg.flashboot else "OFF",
            "executionTimeoutMs": cfg.execution_timeout_ms,
            "allowedCudaVersions": cfg.allowed_cuda_versions,
            "aiKey": self.ai_key,
            "type": "QB",
            "userId": self.account_id,
            "version": self.version,
            "createdAt": self.created_at,
            "env": env_view(template.env) if template else [],
        }


@dataclass
class Job:
    """One request on an endpoint's queue."""

    id: str
    endpoint_id: str
    input: Any
    created_at: float
    execution_timeout_s: float
    status: JobStatus = JobStatus.IN_QUEUE
    started_at: float | None = None
    finished_at: float | None = None
    worker_id: str | None = None
    output: Any = None
    error: Any = None
    stream: list[Any] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        """The job as ``/status`` answers it."""
        body: dict[str, Any] = {"id": self.id, "status": self.status.value}
        if self.started_at is not None:
            body["delayTime"] = _ms(self.started_at - self.created_at)
            body["workerId"] = self.worker_id
        if self.finished_at is not None and self.started_at is not None:
            body["executionTime"] = _ms(self.finished_at - self.started_at)
        if self.status == JobStatus.COMPLETED or self.output is not None:
            body["output"] = self.output
        if self.error is not None:
            body["error"] = self.error
        return body

    def state_view(self) -> dict[str, Any]:
        """The job as ``/_sim/state`` shows it: the status plus its endpoint and input."""
        return {**self.view(), "endpointId": self.endpoint_id, "input": self.input}


@dataclass
class Worker:
    """One worker of an endpoint; THROTTLED workers wait for GPU capacity and have no pool yet."""

    id: str
    endpoint_id: str
    mode: str
    created_at: float
    phase: WorkerPhase = WorkerPhase.THROTTLED
    pool_id: str | None = None
    gpu_type_id: str | None = None
    launch_at: float | None = None
    runner: WorkerRunner | None = None
    job_ids: set[str] = field(default_factory=set)
    stop_job_ids: list[str] = field(default_factory=list)
    idle_since: float = field(default_factory=time.monotonic)
    last_ping: float | None = None
    exit_code: int | None = None
    log_path: str | None = None

    @property
    def health_state(self) -> str:
        """The /health bucket this worker counts in."""
        if self.phase == WorkerPhase.READY:
            return "running" if self.job_ids else "idle"
        return self.phase.value

    def holds_gpu(self) -> bool:
        """Whether the worker occupies a slot of its pool's capacity."""
        return self.phase in (WorkerPhase.INITIALIZING, WorkerPhase.READY)

    def view(self) -> dict[str, Any]:
        """The worker as ``/_sim/state`` shows it."""
        return {
            "id": self.id,
            "mode": self.mode,
            "state": self.health_state,
            "pool": self.pool_id,
            "gpuTypeId": self.gpu_type_id,
            "jobs": sorted(self.job_ids),
            "exitCode": self.exit_code,
            "logPath": self.log_path,
        }


@dataclass
class Scenario:
    """Test controls (``POST /_sim/scenario``); global to the simulator."""

    worker_mode: str = "instant"
    worker_command: list[str] = field(default_factory=lambda: list(DEFAULT_WORKER_COMMAND))
    capacity: dict[str, int] = field(default_factory=dict)
    start_delay_s: float = 0.0
    crash_on_start: bool = False
    worker_report: str = "ready"
    graphql_errors: int = 0
    graphql_refusals: int = 0
    rate_limit: int = 0
    duplicate_endpoint_names: bool = False

    def update(self, changes: dict[str, Any]) -> None:
        """Apply the keys given (others keep their value); refuse unknown keys and bad values."""
        self._validate(changes)
        for key, value in changes.items():
            setattr(self, key, dict(value or {}) if key == "capacity" else value)

    def _validate(self, changes: dict[str, Any]) -> None:
        unknown = set(changes) - set(self.view())
        if unknown:
            raise SimError(f"unknown scenario keys: {', '.join(sorted(unknown))}")
        for key in ("start_delay_s", "graphql_errors", "graphql_refusals", "rate_limit"):
            value = changes.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise SimError(f"{key} must be a non-negative number")
        for key in ("crash_on_start", "duplicate_endpoint_names"):
            if not isinstance(changes.get(key, False), bool):
                raise SimError(f"{key} must be a boolean")
        if "worker_mode" in changes and changes["worker_mode"] not in WORKER_MODES:
            raise SimError(f"worker_mode must be one of {', '.join(WORKER_MODES)}")
        if "worker_report" in changes and changes["worker_report"] not in WORKER_REPORTS:
            raise SimError(f"worker_report must be one of {', '.join(WORKER_REPORTS)}")
        mode = changes.get("worker_mode", self.worker_mode)
        if mode == "process" and changes.get("worker_report", self.worker_report) != "ready":
            # A real worker process reports what really happens to it; a simulated failure would be silently lost.
            raise SimError("worker_report applies to instant workers only; set worker_mode to instant first")
        if "capacity" in changes:
            capacity = changes["capacity"] or {}
            bad = [pool for pool in capacity if pool not in POOLS_BY_ID]
            if bad or not all(isinstance(n, int) and n >= 0 for n in capacity.values()):
                raise SimError("capacity maps known pool ids to non-negative integers")
        command = changes.get("worker_command", self.worker_command)
        if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
            raise SimError("worker_command is a non-empty argv list of strings")

    def view(self) -> dict[str, Any]:
        """The scenario as JSON."""
        return {
            "worker_mode": self.worker_mode,
            "worker_command": list(self.worker_command),
            "capacity": dict(self.capacity),
            "start_delay_s": self.start_delay_s,
            "crash_on_start": self.crash_on_start,
            "worker_report": self.worker_report,
            "graphql_errors": self.graphql_errors,
            "graphql_refusals": self.graphql_refusals,
            "rate_limit": self.rate_limit,
            "duplicate_endpoint_names": self.duplicate_endpoint_names,
        }


def split_ids(value: str) -> list[str]:
    """Runpod's comma-separated id lists, blanks dropped."""
    return [part.strip() for part in value.split(",") if part.strip()]


def env_view(env: dict[str, str]) -> list[dict[str, str]]:
    """Template env as Runpod returns it: a list of key/value pairs."""
    return [{"key": key, "value": value} for key, value in env.items()]


def needed_workers(config: EndpointConfig, pending_jobs: int) -> int:
    """How many workers the autoscaler wants for this many queued + running jobs, within min/max.

    QUEUE_DELAY is simplified to one worker per pending job (Runpod adds workers while jobs wait longer than
    ``scalerValue`` seconds); REQUEST_COUNT is one worker per ``scalerValue`` pending jobs, as Runpod documents.
    """
    if config.scaler_type == "REQUEST_COUNT":
        wanted = math.ceil(pending_jobs / config.scaler_value)
    else:
        wanted = pending_jobs
    return min(config.workers_max, max(config.workers_min, wanted))


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))

"""Records the Runpod simulator keeps (accounts, endpoints, jobs, workers, scenario) and their JSON views.

Views use Runpod's field names (camelCase), so the v2 control plane, the data plane and ``/_sim/state`` share them.
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

from simulators.runpod.catalog import DATA_CENTER_ID, POOLS_BY_ID, gpu_types_in_pool

_ID_ALPHABET = string.ascii_lowercase + string.digits
DEFAULT_WORKER_COMMAND: tuple[str, ...] = (sys.executable, "-m", "simulators.runpod.test_worker")
WORKER_MODES = ("process", "instant")
WORKER_REPORTS = ("ready", "failed", "out_of_memory")


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


class ProblemError(SimError):
    """A control-plane refusal, answered as RFC 9457 problem+json (``title``, ``status``, ``detail``, ``errors``)."""

    def __init__(self, status: int, detail: str, errors: list[str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors


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
class EndpointConfig:
    """An endpoint's v2 configuration (``CreateEndpointRequest`` with its defaults; PATCH changes parts of it)."""

    name: str
    image: str
    pools: list[str]
    args: str = ""
    disk: int = 20
    ports: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    registry: str | None = None
    excluded_types: list[str] = field(default_factory=list)
    gpu_count: int = 1
    allowed_cuda_versions: list[str] = field(default_factory=list)
    min_cuda_version: str | None = None
    workers_min: int = 0
    workers_max: int = 3
    idle_timeout: int = 10
    scaler_type: str = "QUEUE_DELAY"
    scaler_value: float = 4
    data_center_ids: list[str] = field(default_factory=list)
    network_volumes: list[str] = field(default_factory=list)
    timeout_ms: int = 300_000
    flashboot: str = "OFF"

    def gpu_type_for(self, pool_id: str) -> str | None:
        """The GPU type a worker placed in ``pool_id`` gets (the pool's first type not excluded), or None."""
        excluded = set(self.excluded_types)
        return next((gpu.id for gpu in gpu_types_in_pool(pool_id) if gpu.id not in excluded), None)

    def view_gpu(self) -> dict[str, Any]:
        """The ``EndpointGpuConfig`` object."""
        gpu: dict[str, Any] = {
            "pools": list(self.pools),
            "count": self.gpu_count,
            "allowedCudaVersions": list(self.allowed_cuda_versions),
            "minCudaVersion": self.min_cuda_version,
        }
        if self.excluded_types:
            gpu["excludedTypes"] = list(self.excluded_types)
        return gpu

    def view_workers(self) -> dict[str, Any]:
        """``workers``; ``idleTimeout`` is omitted for REQUEST_COUNT scaling, as Runpod omits it."""
        workers: dict[str, Any] = {"min": self.workers_min, "max": self.workers_max}
        if self.scaler_type != "REQUEST_COUNT":
            workers["idleTimeout"] = self.idle_timeout
        return workers

    def view_scaling(self) -> dict[str, Any]:
        """``scaling``, the discriminated union."""
        if self.scaler_type == "REQUEST_COUNT":
            return {"type": "REQUEST_COUNT", "requestCount": int(self.scaler_value)}
        return {"type": "QUEUE_DELAY", "queueDelay": self.scaler_value}


@dataclass
class Endpoint:
    """A serverless endpoint, its workers and its queue."""

    id: str
    account_id: str
    config: EndpointConfig
    ai_key: str
    created_at: str
    version: int = 1
    created_epoch: float = 0.0  # wall clock, for /_sim/state (benchmarks time what a user sees)
    workers: dict[str, Worker] = field(default_factory=dict)
    queue: list[str] = field(default_factory=list)
    retried: int = 0

    def view(self, base_url: str | None) -> dict[str, Any]:
        """The v2 ``Endpoint`` object (queue-based, GPU)."""
        cfg = self.config
        data_plane = f"{base_url or ''}/v2/{self.id}"
        return {
            "id": self.id,
            "name": cfg.name,
            "type": "QUEUE",
            "requestUrls": {
                "run": f"{data_plane}/run",
                "runSync": f"{data_plane}/runsync",
                "status": f"{data_plane}/status/{{job_id}}",
                "stream": f"{data_plane}/stream/{{job_id}}",
                "cancel": f"{data_plane}/cancel/{{job_id}}",
                "retry": f"{data_plane}/retry/{{job_id}}",
                "purgeQueue": f"{data_plane}/purge-queue",
                "health": f"{data_plane}/health",
            },
            "image": cfg.image,
            "args": cfg.args,
            "disk": cfg.disk,
            "ports": list(cfg.ports),
            "env": dict(cfg.env),
            "registry": cfg.registry,
            "gpu": cfg.view_gpu(),
            "workers": cfg.view_workers(),
            "scaling": cfg.view_scaling(),
            "dataCenterIds": list(cfg.data_center_ids),
            "networkVolumes": list(cfg.network_volumes),
            "timeout": cfg.timeout_ms,
            "flashboot": cfg.flashboot,
            "createdAt": self.created_at,
        }


@dataclass
class Job:
    """One request on an endpoint's queue."""

    id: str
    endpoint_id: str
    account_id: str
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
    finished_epoch: float | None = None  # wall clock, for /_sim/state (benchmarks time what a user sees)
    s3_config: dict[str, Any] | None = None  # Runpod's per-job output bucket, handed to the worker with the input
    webhook: str | None = None  # Runpod POSTs the job (as /status shows it) here when it ends
    webhook_calls: list[int | str] = field(default_factory=list)  # each call's HTTP status, or the error

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
        state = {
            **self.view(),
            "endpointId": self.endpoint_id,
            "input": self.input,
            "finishedEpoch": self.finished_epoch,
        }
        if self.s3_config is not None:
            state["s3Config"] = {**self.s3_config, "accessSecret": "<redacted>"}
        if self.webhook is not None:
            state["webhook"], state["webhookCalls"] = self.webhook, list(self.webhook_calls)
        return state


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
    version: int = 1
    image: str | None = None
    started_at: float | None = None
    started_at_wall: str | None = None
    started_epoch: float | None = None  # wall clock, for /_sim/state

    @property
    def health_state(self) -> str:
        """The /health bucket this worker counts in."""
        if self.phase == WorkerPhase.READY:
            return "running" if self.job_ids else "idle"
        return self.phase.value

    def holds_gpu(self) -> bool:
        """Whether the worker occupies a slot of its pool's capacity."""
        return self.phase in (WorkerPhase.INITIALIZING, WorkerPhase.READY)

    @property
    def status(self) -> str:
        """The v2 ``WorkerStatus``: RUNNING, IDLE, INITIALIZING, THROTTLED or UNHEALTHY."""
        return self.health_state.upper()

    def v2_view(self, endpoint_version: int, gpu_count: int, now: float) -> dict[str, Any]:
        """The v2 ``Worker`` object (``GET /v2/serverless/{id}/workers``)."""
        placed = self.pool_id is not None
        running = self.started_at is not None and self.phase != WorkerPhase.UNHEALTHY
        return {
            "id": self.id,
            "status": self.status,
            "isStale": self.version != endpoint_version,
            "version": self.version,
            "gpuCount": gpu_count if placed else 0,
            "image": self.image,
            "uptimeSeconds": int(now - self.started_at) if running and self.started_at is not None else None,
            "gpuTypeId": self.gpu_type_id,
            "dataCenterId": DATA_CENTER_ID if placed else None,
            "startedAt": self.started_at_wall,
        }

    def view(self) -> dict[str, Any]:
        """The worker as ``/_sim/state`` shows it."""
        return {
            "id": self.id,
            "mode": self.mode,
            "status": self.status,
            "version": self.version,
            "state": self.health_state,
            "pool": self.pool_id,
            "gpuTypeId": self.gpu_type_id,
            "jobs": sorted(self.job_ids),
            "exitCode": self.exit_code,
            "logPath": self.log_path,
            "startedEpoch": self.started_epoch,
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
    api_errors: int = 0
    api_refusals: int = 0
    rate_limit: int = 0

    def update(self, changes: dict[str, Any]) -> None:
        """Apply the keys given (others keep their value); refuse unknown keys and bad values."""
        self._validate(changes)
        for key, value in changes.items():
            setattr(self, key, dict(value or {}) if key == "capacity" else value)

    def _validate(self, changes: dict[str, Any]) -> None:
        unknown = set(changes) - set(self.view())
        if unknown:
            raise SimError(f"unknown scenario keys: {', '.join(sorted(unknown))}")
        for key in ("start_delay_s", "api_errors", "api_refusals", "rate_limit"):
            value = changes.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise SimError(f"{key} must be a non-negative number")
        if not isinstance(changes.get("crash_on_start", False), bool):
            raise SimError("crash_on_start must be a boolean")
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
            "api_errors": self.api_errors,
            "api_refusals": self.api_refusals,
            "rate_limit": self.rate_limit,
        }


def needed_workers(config: EndpointConfig, pending_jobs: int) -> int:
    """How many workers the autoscaler wants for this many queued + running jobs, within min/max.

    QUEUE_DELAY is simplified to one worker per pending job (Runpod adds workers while jobs wait longer than
    ``queueDelay`` seconds); REQUEST_COUNT is one worker per ``requestCount`` pending jobs, as Runpod documents.
    """
    if config.scaler_type == "REQUEST_COUNT":
        wanted = math.ceil(pending_jobs / config.scaler_value)
    else:
        wanted = pending_jobs
    return min(config.workers_max, max(config.workers_min, wanted))


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))

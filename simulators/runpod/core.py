"""The Runpod simulator's state and behaviour, independent of HTTP.

One condition variable (``_cond``, over one re-entrant lock) guards all state; every change notifies it, which
wakes long-polls, ``runsync`` waiters and the supervisor. The supervisor thread is the autoscaler: it places workers
in GPU pools (or leaves them THROTTLED), launches them after the scenario's start delay, notices exits, stops idle
workers after ``idleTimeout`` and times out jobs past their execution timeout.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import requests

from simulators.runpod import v2
from simulators.runpod.catalog import GPU_TYPES, availability_level, gpu_type_view
from simulators.runpod.model import (
    DATA_CENTER_ID,
    TERMINAL_JOB_STATES,
    Account,
    Endpoint,
    Job,
    JobStatus,
    NotFoundError,
    ProblemError,
    Scenario,
    SimError,
    UnauthorizedError,
    UnknownWorkerError,
    Worker,
    WorkerPhase,
    WorkerRunner,
    needed_workers,
    new_id,
    new_job_id,
)

SUPERVISOR_TICK_S = 0.05
PING_INTERVAL_MS = 1000  # the SDK divides by 1000 and sleeps that many whole seconds: below 1000 it would spin
JOB_TAKE_HOLD_S = 2.0  # short enough that a SIGTERM'd SDK worker ends its long-poll quickly
RUNSYNC_DEFAULT_WAIT_MS = 90_000
RUNSYNC_MIN_WAIT_MS = 1_000
RUNSYNC_MAX_WAIT_MS = 300_000
MIN_TTL_MS = 10_000

# Launches a worker's runner: (simulator, worker, env) -> runner. Set by the app (process or instant).
Launcher = Callable[["RunpodSimulator", Worker, dict[str, str]], WorkerRunner]


@dataclass(frozen=True)
class SimOptions:
    """How a simulator starts.

    Attributes:
        api_keys: keys registered from the start (and again after a reset).
        worker_mode: ``instant`` or ``process``; the scenario can change it later.
        worker_command: argv of worker processes (default: the SDK-based test worker).
        base_url: the URL workers reach the simulator at, if known before serving.
        log_dir: where worker logs and homes go (default: a temporary folder removed at shutdown).
        job_take_hold_s: how long job-take and job-stop long-polls are held open when there is nothing to give.
        job_webhook_retry_delay_s: the pause before each retry of a failed job webhook call.
    """

    api_keys: tuple[str, ...] = ()
    worker_mode: str = "instant"
    worker_command: tuple[str, ...] = ()
    base_url: str | None = None
    log_dir: Path | None = None
    job_take_hold_s: float = JOB_TAKE_HOLD_S
    # Runpod calls a job's webhook once it ends and, on a failed call, "up to 2 more times with a 10-second delay".
    job_webhook_retry_delay_s: float = 10.0


class RunpodSimulator:
    """All simulated Runpod state: accounts, endpoints, jobs, workers and the scenario."""

    def __init__(self, launchers: dict[str, Launcher], options: SimOptions) -> None:
        self._cond = threading.Condition()
        self._launchers = launchers
        self._initial_keys = list(options.api_keys)
        self._initial_scenario: dict[str, Any] = {"worker_mode": options.worker_mode}
        if options.worker_command:
            self._initial_scenario["worker_command"] = list(options.worker_command)
        self.base_url = options.base_url.rstrip("/") if options.base_url else None
        self._own_log_dir = options.log_dir is None
        self.log_dir = options.log_dir or Path(tempfile.mkdtemp(prefix="runpod-sim-"))
        self.job_take_hold_s = options.job_take_hold_s
        self.job_webhook_retry_delay_s = options.job_webhook_retry_delay_s
        self._closed = False
        self._stoppers: list[threading.Thread] = []
        self._reset_state()
        self._supervisor = threading.Thread(target=self._supervise, name="runpod-sim-supervisor", daemon=True)
        self._supervisor.start()
        # Worker processes live in their own process groups: make sure they end with us even without shutdown().
        atexit.register(self.shutdown)

    # ------------------------------------------------------------------ lifecycle and test controls

    def _reset_state(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.jobs: dict[str, Job] = {}
        self.requests_by_key: dict[str, int] = {}
        self.scenario = Scenario()
        self.scenario.update(self._initial_scenario)
        for key in self._initial_keys:
            self.register_account(key)

    def set_base_url(self, base_url: str) -> None:
        """The URL workers reach the simulator at (used in their ``RUNPOD_WEBHOOK_*`` variables)."""
        with self._cond:
            self.base_url = base_url.rstrip("/")
            self._cond.notify_all()

    def note_base_url(self, base_url: str) -> None:
        """Adopt the URL a request came in on, unless one is known already."""
        if self.base_url is None:
            self.set_base_url(base_url)

    def register_account(self, api_key: str) -> Account:
        """Register an API key (idempotent); only registered keys pass auth."""
        with self._cond:
            if not api_key:
                raise SimError("api_key is required")
            account = self.accounts.get(api_key)
            if account is None:
                user_id = f"user_{new_id(24)}"
                account = Account(id=user_id, api_key=api_key, email=f"{user_id}@example.com")
                self.accounts[api_key] = account
            return account

    def update_scenario(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply scenario keys; the supervisor re-evaluates placement on its next tick."""
        with self._cond:
            self.scenario.update(changes)
            self._cond.notify_all()
            return self.scenario.view()

    def take_forced_failure(self) -> int | None:
        """The HTTP status a scenario forces on this control-plane call (429 ``rate_limit``, 500 ``api_errors``,
        400 ``api_refusals``), consuming one count."""
        with self._cond:
            if self.scenario.rate_limit > 0:
                self.scenario.rate_limit -= 1
                return 429
            if self.scenario.api_errors > 0:
                self.scenario.api_errors -= 1
                return 500
            if self.scenario.api_refusals > 0:
                self.scenario.api_refusals -= 1
                return 400
            return None

    def reset(self) -> None:
        """Stop every worker and forget everything but the keys given at start."""
        with self._cond:
            for endpoint in self.endpoints.values():
                self._stop_workers(endpoint, list(endpoint.workers.values()))
            self._reset_state()
            self._cond.notify_all()
        self._join_stoppers()

    def state(self) -> dict[str, Any]:
        """Everything, per account, for test assertions."""
        with self._cond:
            accounts = []
            for account in self.accounts.values():
                endpoints = [e for e in self.endpoints.values() if e.account_id == account.id]
                accounts.append(
                    {
                        "id": account.id,
                        "api_key": account.api_key,
                        "requests": self.requests_by_key.get(account.api_key, 0),
                        "templates": [],  # v2 endpoints carry their container config: kept for shape only
                        "endpoints": [
                            {
                                **e.view(self.base_url),
                                "aiKey": e.ai_key,
                                "version": e.version,
                                "createdEpoch": e.created_epoch,
                            }
                            for e in endpoints
                        ],
                        # Jobs of deleted endpoints stay listed (CANCELLED), so a test can see what a delete did.
                        "jobs": [j.state_view() for j in self.jobs.values() if j.account_id == account.id],
                        "workers": [{**w.view(), "endpointId": e.id} for e in endpoints for w in e.workers.values()],
                    }
                )
            return {"scenario": self.scenario.view(), "pools_in_use": self._pools_in_use(), "accounts": accounts}

    def shutdown(self) -> None:
        """Stop the supervisor and every worker (processes included); idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            atexit.unregister(self.shutdown)
            for endpoint in self.endpoints.values():
                self._stop_workers(endpoint, list(endpoint.workers.values()))
            self._cond.notify_all()
        self._supervisor.join(timeout=5)
        self._join_stoppers()
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    # ------------------------------------------------------------------ auth

    def count_request(self, api_key: str | None) -> None:
        """Count a control- or data-plane request made with a registered key (refused ones included)."""
        with self._cond:
            if api_key in self.accounts:
                self.requests_by_key[api_key] = self.requests_by_key.get(api_key, 0) + 1

    def account_for_key(self, api_key: str | None) -> Account:
        """The account an API key belongs to, or UnauthorizedError."""
        with self._cond:
            account = self.accounts.get(api_key or "")
            if account is None:
                raise UnauthorizedError("Unauthorized")
            return account

    # ------------------------------------------------------------------ control plane

    def create_endpoint(self, account: Account, body: Any) -> dict[str, Any]:
        """``POST /v2/serverless``: a new queue-based GPU endpoint (duplicate names are accepted, as on Runpod)."""
        config = v2.config_from_create(body)
        with self._cond:
            endpoint = Endpoint(
                id=new_id(),
                account_id=account.id,
                config=config,
                ai_key=new_id(32).upper(),
                created_at=_rfc3339(),
                created_epoch=time.time(),
            )
            self.endpoints[endpoint.id] = endpoint
            self._cond.notify_all()
            return endpoint.view(self.base_url)

    def list_endpoints(self, account: Account) -> dict[str, Any]:
        """``GET /v2/serverless``: every endpoint of the account, oldest first (the schema defines no paging)."""
        with self._cond:
            mine = [e.view(self.base_url) for e in self.endpoints.values() if e.account_id == account.id]
            return {"endpoints": mine}

    def get_endpoint(self, account: Account, endpoint_id: str) -> dict[str, Any]:
        """``GET /v2/serverless/{id}``."""
        with self._cond:
            return self._own_endpoint(account, endpoint_id).view(self.base_url)

    def update_endpoint(self, account: Account, endpoint_id: str, body: Any) -> dict[str, Any]:
        """``PATCH /v2/serverless/{id}``: only the fields sent change; a container or GPU change is a new release."""
        with self._cond:
            endpoint = self._own_endpoint(account, endpoint_id)
            config, new_release = v2.config_from_patch(endpoint.config, body)
            endpoint.config = config
            if new_release:
                endpoint.version += 1
                # Waiting (throttled) and crashed workers are replaced under the new release at once; idle
                # workers of the old release are rolled by the autoscaler, running ones finish their jobs first.
                stale = [w for w in endpoint.workers.values() if not w.holds_gpu()]
                self._stop_workers(endpoint, stale)
            self._cond.notify_all()
            return endpoint.view(self.base_url)

    def delete_endpoint(self, account: Account, endpoint_id: str) -> None:
        """``DELETE /v2/serverless/{id}``: terminate every worker, cancel queued and running jobs, forget it."""
        with self._cond:
            endpoint = self._own_endpoint(account, endpoint_id)
            for job in self._jobs_of([endpoint]):
                if job.status not in TERMINAL_JOB_STATES:
                    self._end_job(job, JobStatus.CANCELLED)
            self._stop_workers(endpoint, list(endpoint.workers.values()))
            del self.endpoints[endpoint.id]
            self._cond.notify_all()

    def list_workers(self, account: Account, endpoint_id: str) -> dict[str, Any]:
        """``GET /v2/serverless/{id}/workers``: every current worker with its status, and the summary."""
        with self._cond:
            endpoint = self._own_endpoint(account, endpoint_id)
            now = time.monotonic()
            workers = [w.v2_view(endpoint.version, endpoint.config.gpu_count, now) for w in endpoint.workers.values()]
            summary = dict.fromkeys(("running", "idle", "initializing", "throttled", "unhealthy"), 0)
            for worker in workers:
                summary[worker["status"].lower()] += 1
            summary["total"] = len(workers)
            return {"workers": workers, "summary": summary, "endpointVersion": endpoint.version}

    def gpu_catalog(self, with_availability: bool, products: list[str], gpu_count: int) -> dict[str, Any]:
        """``GET /v2/catalog/gpus``; serverless availability follows the scenario's capacity left per pool."""
        with self._cond:
            in_use = self._pools_in_use()
            gpus = []
            for gpu in GPU_TYPES:
                level = None
                if with_availability:
                    level = "HIGH"  # pods and clusters are not simulated: plentiful
                    if "SERVERLESS" in products:
                        capacity = self.scenario.capacity.get(gpu.pool_id or "")
                        free = None if capacity is None else capacity - in_use.get(gpu.pool_id or "", 0)
                        level = availability_level(free) if gpu.pool_id else "NONE"
                    if gpu_count > gpu.max_gpu_count:
                        level = "NONE"
                gpus.append(gpu_type_view(gpu, level))
            return {"gpus": gpus}

    def _own_endpoint(self, account: Account, endpoint_id: str) -> Endpoint:
        """The account's endpoint; another account's is as unknown as a missing one (404), as in v2."""
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None or endpoint.account_id != account.id:
            raise ProblemError(404, f"endpoint {endpoint_id} not found")
        return endpoint

    # ------------------------------------------------------------------ data plane

    def endpoint_for(self, account: Account, endpoint_id: str) -> Endpoint:
        """The endpoint, if this account owns it (404 unknown, 401 someone else's)."""
        with self._cond:
            endpoint = self.endpoints.get(endpoint_id)
            if endpoint is None:
                raise NotFoundError("endpoint not found")
            if endpoint.account_id != account.id:
                raise UnauthorizedError("Unauthorized")
            return endpoint

    def submit(self, account: Account, endpoint_id: str, body: Any) -> dict[str, Any]:
        """Queue a job (``/run``)."""
        with self._cond:
            endpoint = self.endpoint_for(account, endpoint_id)
            if not isinstance(body, dict) or "input" not in body:
                raise SimError("request body must be a JSON object with an 'input' field")
            timeout_ms = _job_policy(body.get("policy")) or endpoint.config.timeout_ms
            s3_config = body.get("s3Config")
            if s3_config is not None and not isinstance(s3_config, dict):
                raise SimError("s3Config must be an object")
            webhook = body.get("webhook")
            if webhook is not None and (
                not isinstance(webhook, str) or not webhook.startswith(("http://", "https://"))
            ):
                raise SimError("webhook must be an http(s) URL")
            job = Job(
                id=new_job_id(),
                endpoint_id=endpoint.id,
                account_id=account.id,
                input=body["input"],
                created_at=time.monotonic(),
                execution_timeout_s=float(timeout_ms) / 1000,
                s3_config=s3_config,
                webhook=webhook,
            )
            self.jobs[job.id] = job
            endpoint.queue.append(job.id)
            self._cond.notify_all()
            return {"id": job.id, "status": job.status.value}

    def wait_for(self, account: Account, endpoint_id: str, job_id: str, wait_ms: int) -> dict[str, Any]:
        """The job once terminal, or as it stands after ``wait_ms`` (``/runsync``)."""
        deadline = time.monotonic() + wait_ms / 1000
        with self._cond:
            while True:
                job = self._job_for(account, endpoint_id, job_id)
                remaining = deadline - time.monotonic()
                if job.status in TERMINAL_JOB_STATES or remaining <= 0 or self._closed:
                    return job.view()
                self._cond.wait(remaining)

    def status(self, account: Account, endpoint_id: str, job_id: str) -> dict[str, Any]:
        """The job (``/status/{job}``)."""
        with self._cond:
            return self._job_for(account, endpoint_id, job_id).view()

    def stream(self, account: Account, endpoint_id: str, job_id: str) -> dict[str, Any]:
        """Stream chunks not yet read (``/stream/{job}``)."""
        with self._cond:
            job = self._job_for(account, endpoint_id, job_id)
            chunks, job.stream = job.stream, []
            return {"status": job.status.value, "stream": [{"output": chunk} for chunk in chunks]}

    def cancel(self, account: Account, endpoint_id: str, job_id: str) -> dict[str, Any]:
        """Cancel a job (``/cancel/{job}``); a running job's worker is told to stop it."""
        with self._cond:
            job = self._job_for(account, endpoint_id, job_id)
            if job.status not in TERMINAL_JOB_STATES:
                self._end_job(job, JobStatus.CANCELLED)
            self._cond.notify_all()
            return {"id": job.id, "status": job.status.value}

    def purge_queue(self, account: Account, endpoint_id: str) -> dict[str, Any]:
        """Remove every queued job (``/purge-queue``); running jobs are left alone, as Runpod does."""
        with self._cond:
            endpoint = self.endpoint_for(account, endpoint_id)
            removed = list(endpoint.queue)
            endpoint.queue.clear()
            for job_id in removed:
                self.jobs.pop(job_id, None)
            self._cond.notify_all()
            return {"removed": len(removed), "status": "completed"}

    def health(self, account: Account, endpoint_id: str) -> dict[str, Any]:
        """Job and worker counts (``/health``)."""
        with self._cond:
            endpoint = self.endpoint_for(account, endpoint_id)
            jobs = {"completed": 0, "failed": 0, "inProgress": 0, "inQueue": 0, "retried": endpoint.retried}
            for job in self._jobs_of([endpoint]):
                bucket = _HEALTH_JOB_BUCKETS.get(job.status)
                if bucket:
                    jobs[bucket] += 1
            workers = dict.fromkeys(("idle", "initializing", "ready", "running", "throttled", "unhealthy"), 0)
            for worker in endpoint.workers.values():
                workers[worker.health_state] += 1
            workers["ready"] = workers["idle"] + workers["running"]
            return {"jobs": jobs, "workers": workers}

    # ------------------------------------------------------------------ worker API

    def authorize_worker(self, endpoint_id: str, key: str | None) -> None:
        """Check the worker's ``RUNPOD_AI_API_KEY`` against the endpoint's."""
        with self._cond:
            endpoint = self.endpoints.get(endpoint_id)
            if endpoint is None:
                raise NotFoundError("endpoint not found")
            if key != endpoint.ai_key:
                raise UnauthorizedError("Unauthorized")

    def take_jobs(self, endpoint_id: str, worker_id: str, count: int, wait_s: float) -> list[dict[str, Any]]:
        """Hand up to ``count`` queued jobs to a worker, holding the call up to ``wait_s`` (job-take long-poll)."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            while True:
                endpoint, worker = self._live_worker(endpoint_id, worker_id)
                self._mark_ready(worker)
                taken: list[dict[str, Any]] = []
                while endpoint.queue and len(taken) < count:
                    job = self.jobs[endpoint.queue.pop(0)]
                    job.status = JobStatus.IN_PROGRESS
                    job.started_at = time.monotonic()
                    job.worker_id = worker.id
                    worker.job_ids.add(job.id)
                    taken.append(
                        {"id": job.id, "input": job.input, **({"s3Config": job.s3_config} if job.s3_config else {})}
                    )
                remaining = deadline - time.monotonic()
                if taken or remaining <= 0 or self._closed:
                    self._cond.notify_all()
                    return taken
                self._cond.wait(remaining)

    def take_stop_signals(self, endpoint_id: str, worker_id: str, wait_s: float) -> list[str]:
        """Job ids the worker must stop (cancelled or timed out), holding the call up to ``wait_s``."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            while True:
                _, worker = self._live_worker(endpoint_id, worker_id)
                remaining = deadline - time.monotonic()
                if worker.stop_job_ids or remaining <= 0 or self._closed:
                    signals, worker.stop_job_ids = worker.stop_job_ids, []
                    return signals
                self._cond.wait(remaining)

    def finish_job(self, endpoint_id: str, worker_id: str, job_id: str, result: dict[str, Any]) -> None:
        """Record a worker's result (job-done); late results for cancelled or timed-out jobs are dropped."""
        with self._cond:
            endpoint = self.endpoints.get(endpoint_id)
            job = self.jobs.get(job_id)
            if endpoint is None or job is None or job.endpoint_id != endpoint_id:
                raise NotFoundError("job not found")
            worker = endpoint.workers.get(worker_id)
            if job.status == JobStatus.IN_PROGRESS and job.worker_id == worker_id:
                job.output = result.get("output")
                job.error = result.get("error")
                self._end_job(job, JobStatus.FAILED if job.error else JobStatus.COMPLETED)
            if worker is not None and result.get("stopPod"):
                self._stop_workers(endpoint, [worker])
            self._cond.notify_all()

    def add_stream_output(self, endpoint_id: str, worker_id: str, job_id: str, result: dict[str, Any]) -> None:
        """Record an intermediate (streamed) output of a running job."""
        with self._cond:
            job = self.jobs.get(job_id)
            if job is None or job.endpoint_id != endpoint_id or job.worker_id != worker_id:
                raise NotFoundError("job not found")
            if job.status == JobStatus.IN_PROGRESS and "output" in result:
                job.stream.append(result["output"])
            self._cond.notify_all()

    def ping(self, endpoint_id: str, worker_id: str) -> None:
        """A worker heartbeat: the worker is up."""
        with self._cond:
            _, worker = self._live_worker(endpoint_id, worker_id)
            self._mark_ready(worker)
            worker.last_ping = time.monotonic()
            self._cond.notify_all()

    # ------------------------------------------------------------------ supervisor (autoscaler)

    def _supervise(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                for endpoint in list(self.endpoints.values()):
                    self._reap_exits(endpoint)
                    self._expire_jobs(endpoint, now)
                    self._scale(endpoint, now)
                    self._launch_due(endpoint, now)
                self._cond.wait(self._next_wait(now))

    def _next_wait(self, now: float) -> float:
        """Until the next tick, or sooner when a worker's start delay ends first (so a worker starts when its delay
        says, not up to a tick later: benchmarks time what follows)."""
        if self.base_url is None:
            return SUPERVISOR_TICK_S  # nothing launches before then (_launch_due)
        due = [
            w.launch_at - now
            for e in self.endpoints.values()
            for w in e.workers.values()
            if w.launch_at is not None and w.runner is None and w.phase == WorkerPhase.INITIALIZING
        ]
        return max(0.001, min([SUPERVISOR_TICK_S, *due]))

    def _reap_exits(self, endpoint: Endpoint) -> None:
        for worker in list(endpoint.workers.values()):
            if worker.runner is None or not worker.holds_gpu():
                continue
            code = worker.runner.poll()
            if code is None:
                continue
            worker.exit_code = code
            self._requeue_jobs(endpoint, worker)
            if code == 0:
                del endpoint.workers[worker.id]
            else:
                # A crashed worker stays (counted unhealthy, holding its slot) until the endpoint is updated or
                # scaled to zero, so a worker that always crashes is not restarted in a loop.
                worker.phase = WorkerPhase.UNHEALTHY
            self._cond.notify_all()

    def _expire_jobs(self, endpoint: Endpoint, now: float) -> None:
        for worker in endpoint.workers.values():
            for job_id in list(worker.job_ids):
                job = self.jobs[job_id]
                if job.started_at is not None and now - job.started_at > job.execution_timeout_s:
                    self._end_job(job, JobStatus.TIMED_OUT)

    def _scale(self, endpoint: Endpoint, now: float) -> None:
        config = endpoint.config
        pending = sum(1 for job in self._jobs_of([endpoint]) if job.status in _PENDING)
        desired = needed_workers(config, pending)
        workers = list(endpoint.workers.values())
        for _ in range(desired - len(workers)):
            worker = Worker(
                id=new_id(),
                endpoint_id=endpoint.id,
                mode=self.scenario.worker_mode,
                created_at=now,
                version=endpoint.version,
            )
            endpoint.workers[worker.id] = worker
        surplus = len(workers) - desired
        if surplus > 0:
            throttled = [w for w in workers if w.phase == WorkerPhase.THROTTLED][:surplus]
            self._stop_workers(endpoint, throttled)
            rest = [w for w in workers if w not in throttled]
            over_max = len(rest) - config.workers_max
            if over_max > 0:
                # Prefer stopping workers without jobs; their jobs would go back to the queue.
                rest.sort(key=lambda w: (len(w.job_ids), w.phase != WorkerPhase.UNHEALTHY))
                self._stop_workers(endpoint, rest[:over_max])
                rest = rest[over_max:]
            idle_surplus = len(rest) - desired
            expired = [
                w
                for w in rest
                if w.phase == WorkerPhase.READY and not w.job_ids and now - w.idle_since >= config.idle_timeout
            ]
            self._stop_workers(endpoint, expired[: max(0, idle_surplus)])
        # A rolling release: idle workers of an older release make way for workers of the current one.
        stale = [
            w
            for w in endpoint.workers.values()
            if w.phase == WorkerPhase.READY and not w.job_ids and w.version != endpoint.version
        ]
        self._stop_workers(endpoint, stale)
        for worker in endpoint.workers.values():
            if worker.phase == WorkerPhase.THROTTLED:
                worker.version = endpoint.version
                self._place(endpoint, worker, now)

    def _place(self, endpoint: Endpoint, worker: Worker, now: float) -> None:
        in_use = self._pools_in_use()
        for pool_id in endpoint.config.pools:
            capacity = self.scenario.capacity.get(pool_id)
            gpu_type = endpoint.config.gpu_type_for(pool_id)
            if gpu_type is not None and (capacity is None or in_use.get(pool_id, 0) < capacity):
                worker.phase = WorkerPhase.INITIALIZING
                worker.pool_id = pool_id
                worker.gpu_type_id = gpu_type
                worker.mode = self.scenario.worker_mode
                worker.launch_at = now + self.scenario.start_delay_s
                self._cond.notify_all()
                return

    def _launch_due(self, endpoint: Endpoint, now: float) -> None:
        if self.base_url is None:
            return  # nobody has called us yet, so workers could not reach us either
        for worker in endpoint.workers.values():
            due = worker.launch_at is not None and worker.launch_at <= now
            if worker.phase != WorkerPhase.INITIALIZING or worker.runner is not None or not due:
                continue
            # The worker runs the release current at its start: that release's container config and env.
            worker.version = endpoint.version
            worker.image = endpoint.config.image
            worker.started_at = now
            worker.started_at_wall = _rfc3339()
            worker.started_epoch = time.time()
            env = self._worker_env(endpoint, worker)
            worker.runner = self._launchers[worker.mode](self, worker, env)

    def _worker_env(self, endpoint: Endpoint, worker: Worker) -> dict[str, str]:
        """The endpoint's ``env`` plus the variables Runpod sets in every serverless worker."""
        prefix = f"{self.base_url}/v2/{endpoint.id}"
        gpu = quote_plus(worker.gpu_type_id or "")
        env = dict(endpoint.config.env)
        env.update(
            {
                "RUNPOD_WEBHOOK_GET_JOB": f"{prefix}/job-take/$ID?gpu={gpu}",
                "RUNPOD_WEBHOOK_POST_OUTPUT": f"{prefix}/job-done/$RUNPOD_POD_ID/$ID?gpu={gpu}",
                "RUNPOD_WEBHOOK_POST_STREAM": f"{prefix}/job-stream/$RUNPOD_POD_ID/$ID?gpu={gpu}",
                "RUNPOD_WEBHOOK_PING": f"{prefix}/ping/$RUNPOD_POD_ID?gpu={gpu}",
                "RUNPOD_POD_ID": worker.id,
                "RUNPOD_POD_HOSTNAME": f"{worker.id}-{new_id(8)}",
                "RUNPOD_ENDPOINT_ID": endpoint.id,
                "RUNPOD_AI_API_KEY": endpoint.ai_key,
                "RUNPOD_GPU_COUNT": str(endpoint.config.gpu_count),
                "RUNPOD_GPU_NAME": worker.gpu_type_id or "",
                "RUNPOD_DC_ID": DATA_CENTER_ID,
                "RUNPOD_PING_INTERVAL": str(PING_INTERVAL_MS),
                "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
                "RUNPOD_SKIP_GPU_CHECK": "true",
            }
        )
        return env

    # ------------------------------------------------------------------ helpers (call with the lock held)

    def _pools_in_use(self) -> dict[str, int]:
        in_use: dict[str, int] = {}
        for endpoint in self.endpoints.values():
            for worker in endpoint.workers.values():
                if worker.holds_gpu() and worker.pool_id:
                    in_use[worker.pool_id] = in_use.get(worker.pool_id, 0) + 1
        return in_use

    def _jobs_of(self, endpoints: list[Endpoint]) -> list[Job]:
        ids = {e.id for e in endpoints}
        return [job for job in self.jobs.values() if job.endpoint_id in ids]

    def _job_for(self, account: Account, endpoint_id: str, job_id: str) -> Job:
        endpoint = self.endpoint_for(account, endpoint_id)
        job = self.jobs.get(job_id)
        if job is None or job.endpoint_id != endpoint.id:
            raise NotFoundError("request does not exist")
        return job

    def _live_worker(self, endpoint_id: str, worker_id: str) -> tuple[Endpoint, Worker]:
        endpoint = self.endpoints.get(endpoint_id)
        worker = endpoint.workers.get(worker_id) if endpoint else None
        if endpoint is None or worker is None or not worker.holds_gpu():
            raise UnknownWorkerError("worker not found")
        return endpoint, worker

    def _mark_ready(self, worker: Worker) -> None:
        if worker.phase == WorkerPhase.INITIALIZING:
            worker.phase = WorkerPhase.READY
            worker.idle_since = time.monotonic()

    def _end_job(self, job: Job, status: JobStatus) -> None:
        """Move a queued or running job to a terminal state; a running one's worker gets a stop signal."""
        endpoint = self.endpoints[job.endpoint_id]
        if job.id in endpoint.queue:
            endpoint.queue.remove(job.id)
        worker = endpoint.workers.get(job.worker_id or "")
        if worker is not None and job.id in worker.job_ids:
            worker.job_ids.discard(job.id)
            worker.idle_since = time.monotonic()
            if status not in (JobStatus.COMPLETED, JobStatus.FAILED):
                worker.stop_job_ids.append(job.id)
        job.status = status
        job.finished_at = time.monotonic()
        job.finished_epoch = time.time()
        self._cond.notify_all()
        if job.webhook is not None:
            notifier = threading.Thread(
                target=self._call_webhook, args=(job, job.view()), name=f"runpod-sim-webhook-{job.id}", daemon=True
            )
            notifier.start()

    def _call_webhook(self, job: Job, body: dict[str, Any]) -> None:
        """POST the ended job to its webhook; a call that fails or answers other than 2xx is tried twice more."""
        assert job.webhook is not None
        for attempt in range(3):
            if attempt:
                time.sleep(self.job_webhook_retry_delay_s)
            try:
                outcome: int | str = requests.post(job.webhook, json=body, timeout=10).status_code
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            with self._cond:
                job.webhook_calls.append(outcome)
            if (isinstance(outcome, int) and 200 <= outcome < 300) or self._closed:
                return

    def _requeue_jobs(self, endpoint: Endpoint, worker: Worker) -> None:
        """Put a lost worker's running jobs back at the head of the queue (Runpod retries them)."""
        for job_id in sorted(worker.job_ids, reverse=True):
            job = self.jobs[job_id]
            job.status = JobStatus.IN_QUEUE
            job.started_at = None
            job.worker_id = None
            endpoint.queue.insert(0, job_id)
            endpoint.retried += 1
        worker.job_ids.clear()

    def _stop_workers(self, endpoint: Endpoint, workers: list[Worker]) -> None:
        """Remove workers now (freeing their GPUs) and end their runners in the background."""
        for worker in workers:
            if endpoint.workers.pop(worker.id, None) is None:
                continue
            self._requeue_jobs(endpoint, worker)
            if worker.runner is not None:
                stopper = threading.Thread(target=worker.runner.stop, name=f"runpod-sim-stop-{worker.id}")
                stopper.start()
                self._stoppers.append(stopper)
        self._stoppers = [t for t in self._stoppers if t.is_alive()]
        self._cond.notify_all()

    def _join_stoppers(self) -> None:
        with self._cond:
            stoppers, self._stoppers = self._stoppers, []
        for stopper in stoppers:
            with contextlib.suppress(RuntimeError):
                stopper.join()


_PENDING = frozenset({JobStatus.IN_QUEUE, JobStatus.IN_PROGRESS})
_HEALTH_JOB_BUCKETS = {
    JobStatus.COMPLETED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.TIMED_OUT: "failed",
    JobStatus.IN_PROGRESS: "inProgress",
    JobStatus.IN_QUEUE: "inQueue",
}


def _rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _job_policy(policy: Any) -> float | None:
    """Check a job's ``policy`` as Runpod does (400 on a bad one); returns its executionTimeout in ms, if any."""
    if policy is None:
        return None
    if not isinstance(policy, dict):
        raise SimError("policy must be a JSON object")
    for key in ("executionTimeout", "ttl"):
        value = policy.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
            raise SimError(f"policy.{key} must be a positive number of milliseconds")
    if policy.get("ttl") is not None and policy["ttl"] < MIN_TTL_MS:
        raise SimError(f"policy.ttl must be at least {MIN_TTL_MS} ms")
    if "lowPriority" in policy and not isinstance(policy["lowPriority"], bool):
        raise SimError("policy.lowPriority must be a boolean")
    timeout = policy.get("executionTimeout")
    return float(timeout) if timeout is not None else None


def runsync_wait_ms(raw: str | None) -> int:
    """The ``runsync?wait=`` value in ms: 1000..300000 (default 90000), else 400."""
    if raw is None:
        return RUNSYNC_DEFAULT_WAIT_MS
    try:
        wait_ms = int(raw)
    except ValueError:
        raise SimError("wait must be an integer number of milliseconds") from None
    if not RUNSYNC_MIN_WAIT_MS <= wait_ms <= RUNSYNC_MAX_WAIT_MS:
        raise SimError(f"wait must be between {RUNSYNC_MIN_WAIT_MS} and {RUNSYNC_MAX_WAIT_MS} ms")
    return wait_ms

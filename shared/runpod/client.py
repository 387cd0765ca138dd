"""Runpod over HTTP: the REST API v2 control plane (``https://api.runpod.io/v2``) and the job data plane
(``https://api.runpod.ai/v2/{endpoint_id}``).

Not the runpod SDK: importing it costs ~1.3 s of cold start, and its control-plane helpers speak Runpod's older API,
which Runpod retires in early 2027 (docs/decisions/2026-12-runpod-rest-v2.md). Requests carry only the fields we
mean (v2 refuses unknown fields by name), and answers are read leniently (Runpod may add fields).
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any, Literal

import requests
from pydantic import BaseModel, ConfigDict, Field

from shared.runpod.errors import (
    RunpodAuthError,
    RunpodNotFoundError,
    RunpodRejectedError,
    RunpodTimeoutError,
    RunpodUnavailableError,
    rate_limit_reset_s,
)

logger = logging.getLogger(__name__)

_AUTH_STATUSES = (401, 403)


class _Sent(BaseModel):
    """A request body: exactly the fields set, by their v2 names."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    def body(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class _Read(BaseModel):
    """An answer: fields we do not use are ignored (Runpod may add fields at any time)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class WorkerLimits(_Sent):
    min: int
    max: int
    idle_timeout: int | None = Field(None, alias="idleTimeout")


class GpuSelection(_Sent):
    """``gpu``: pools in priority order. A PATCH that sends ``pools`` replaces the whole selection (it clears
    ``excludedTypes`` unless restated), so the pool switch restates nothing else: we never exclude types."""

    pools: list[str]
    count: int = 1


class QueueDelayScaling(_Sent):
    type: Literal["QUEUE_DELAY"] = "QUEUE_DELAY"
    queue_delay: float = Field(alias="queueDelay")


class RequestCountScaling(_Sent):
    type: Literal["REQUEST_COUNT"] = "REQUEST_COUNT"
    request_count: int = Field(alias="requestCount")


class EndpointSpec(_Sent):
    """``CreateEndpointRequest``: a queue-based endpoint with the container config inline (no separate template)."""

    name: str
    type: Literal["QUEUE"] = "QUEUE"
    image: str
    env: dict[str, str]
    disk: int
    gpu: GpuSelection
    workers: WorkerLimits
    scaling: QueueDelayScaling | RequestCountScaling
    flashboot: Literal["OFF", "FLASHBOOT"]
    timeout: int  # per-job execution timeout, ms


class EndpointChange(_Sent):
    """``UpdateEndpointRequest``: PATCH changes only the fields it carries."""

    gpu: GpuSelection | None = None
    workers: WorkerLimits | None = None


class EndpointGpu(_Read):
    pools: list[str] = Field(default_factory=list)


class Endpoint(_Read):
    id: str
    name: str
    gpu: EndpointGpu | None = None


class WorkerStatus(StrEnum):
    RUNNING = "RUNNING"
    IDLE = "IDLE"
    INITIALIZING = "INITIALIZING"
    THROTTLED = "THROTTLED"
    UNHEALTHY = "UNHEALTHY"


class Worker(_Read):
    id: str
    status: WorkerStatus
    gpu_type_id: str | None = Field(None, alias="gpuTypeId")


class WorkerSummary(_Read):
    running: int = 0
    idle: int = 0
    initializing: int = 0
    throttled: int = 0
    unhealthy: int = 0
    total: int = 0


class EndpointWorkers(_Read):
    """``GET /v2/serverless/{id}/workers``."""

    workers: list[Worker] = Field(default_factory=list)
    summary: WorkerSummary = WorkerSummary()


class Availability(StrEnum):
    NONE = "NONE"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


class GpuPrice(_Read):
    serverless: float | None = None  # USD per GPU-hour of the GPU's serverless pool


class CatalogGpu(_Read):
    """One GPU type of ``GET /v2/catalog/gpus?include=AVAILABILITY&product=SERVERLESS``."""

    id: str
    name: str = ""
    pool: str | None = None
    memory: int
    price: GpuPrice = GpuPrice()
    availability: Availability | None = None


class JobCounts(_Read):
    completed: int = 0
    failed: int = 0
    in_progress: int = Field(0, alias="inProgress")
    in_queue: int = Field(0, alias="inQueue")
    retried: int = 0

    @property
    def total(self) -> int:
        """Every job the endpoint has counted: a change means a job arrived or moved."""
        return self.completed + self.failed + self.in_progress + self.in_queue


class EndpointHealth(_Read):
    """``GET /v2/{endpoint_id}/health``: the endpoint's job counters."""

    jobs: JobCounts = Field(default_factory=lambda: JobCounts.model_validate({}))


JOB_FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})


class Job(_Read):
    """A job as the data plane answers it (``run``, ``runsync``, ``status``, ``cancel``)."""

    id: str
    status: str
    output: Any = None
    error: Any = None
    delay_time: int | None = Field(None, alias="delayTime")  # ms in the queue
    execution_time: int | None = Field(None, alias="executionTime")  # ms running
    worker_id: str | None = Field(None, alias="workerId")

    @property
    def final(self) -> bool:
        return self.status in JOB_FINAL_STATES


class RunpodClient:
    """Runpod on behalf of one account (one API key). Cheap to make: the HTTP session is shared."""

    def __init__(self, session: requests.Session, api_base: str, endpoint_base: str, api_key: str, timeout_s: float):
        self._session = session
        self._api = f"{api_base.rstrip('/')}/v2"
        self._data_plane = f"{endpoint_base.rstrip('/')}/v2"
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._timeout = timeout_s

    def endpoint_url(self, endpoint_id: str) -> str:
        """The base URL users call the endpoint at."""
        return f"{self._data_plane}/{endpoint_id}"

    # --- control plane (REST v2) --------------------------------------------------------------------------------

    def create_endpoint(self, spec: EndpointSpec) -> Endpoint:
        """``POST /v2/serverless``. Runpod does not refuse a duplicate name: look before creating on a retry."""
        return Endpoint.model_validate(self._call("POST", f"{self._api}/serverless", spec.body()))

    def list_endpoints(self) -> list[Endpoint]:
        """Every endpoint of the account (``GET /v2/serverless``: one answer, v2 does not page it)."""
        answer = self._call("GET", f"{self._api}/serverless")
        return [Endpoint.model_validate(e) for e in answer.get("endpoints") or []]

    def get_endpoint(self, endpoint_id: str) -> Endpoint:
        """``GET /v2/serverless/{id}``. Raises RunpodNotFoundError when it is gone."""
        return Endpoint.model_validate(self._call("GET", f"{self._api}/serverless/{endpoint_id}"))

    def update_endpoint(self, endpoint_id: str, change: EndpointChange) -> Endpoint:
        """``PATCH /v2/serverless/{id}`` with only the fields to change."""
        return Endpoint.model_validate(self._call("PATCH", f"{self._api}/serverless/{endpoint_id}", change.body()))

    def delete_endpoint(self, endpoint_id: str) -> None:
        """``DELETE /v2/serverless/{id}``: terminates its workers and cancels its jobs. RunpodNotFoundError if gone."""
        self._call("DELETE", f"{self._api}/serverless/{endpoint_id}")

    def endpoint_workers(self, endpoint_id: str) -> EndpointWorkers:
        """``GET /v2/serverless/{id}/workers``: each worker's status and GPU type, and the summary."""
        return EndpointWorkers.model_validate(self._call("GET", f"{self._api}/serverless/{endpoint_id}/workers"))

    def gpu_catalog(self) -> list[CatalogGpu]:
        """Serverless GPU types with their pool, VRAM, serverless price and current availability."""
        params = {"include": "AVAILABILITY", "product": "SERVERLESS"}
        answer = self._call("GET", f"{self._api}/catalog/gpus", params=params)
        return [CatalogGpu.model_validate(g) for g in answer.get("gpus") or []]

    # --- data plane ---------------------------------------------------------------------------------------------

    def run(
        self,
        endpoint_id: str,
        job_input: dict[str, Any],
        *,
        s3_config: dict[str, str] | None = None,
        webhook: str | None = None,
    ) -> Job:
        """Queue a job (``/run``); ``s3_config`` is Runpod's per-job output bucket (``s3Config``), ``webhook`` the
        URL Runpod POSTs the job to when it ends."""
        return Job.model_validate(
            self._call("POST", f"{self._data_plane}/{endpoint_id}/run", _job_body(job_input, s3_config, webhook))
        )

    def runsync(
        self,
        endpoint_id: str,
        job_input: dict[str, Any],
        wait_ms: int,
        *,
        s3_config: dict[str, str] | None = None,
        webhook: str | None = None,
    ) -> Job:
        """Run a job and wait up to ``wait_ms`` for it (``/runsync?wait=``); the job as it stands then.

        The HTTP timeout is the wait plus the client's own timeout, so only a Runpod that overruns its own wait
        raises RunpodTimeoutError.
        """
        url = f"{self._data_plane}/{endpoint_id}/runsync"
        answer = self._call(
            "POST",
            url,
            _job_body(job_input, s3_config, webhook),
            params={"wait": str(wait_ms)},
            timeout=wait_ms / 1000 + self._timeout,
        )
        return Job.model_validate(answer)

    def job_status(self, endpoint_id: str, job_id: str) -> Job:
        """``GET /status/{job}``. RunpodNotFoundError when Runpod no longer knows the job."""
        return Job.model_validate(self._call("GET", f"{self._data_plane}/{endpoint_id}/status/{job_id}"))

    def cancel_job(self, endpoint_id: str, job_id: str) -> Job:
        """``POST /cancel/{job}``: the job's status after the cancel (a final job stays as it was)."""
        return Job.model_validate(self._call("POST", f"{self._data_plane}/{endpoint_id}/cancel/{job_id}"))

    def health(self, endpoint_id: str) -> EndpointHealth:
        """The endpoint's job counters (``/health``)."""
        return EndpointHealth.model_validate(self._call("GET", f"{self._data_plane}/{endpoint_id}/health"))

    # --- transport ----------------------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        url: str,
        payload: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """One request; the answer's JSON object ({} for 204). Errors are classified by status and structure."""
        what = f"Runpod {method} {url.split('/v2', 1)[-1].split('?', maxsplit=1)[0]}"
        try:
            response = self._session.request(
                method, url, json=payload, params=params, headers=self._headers, timeout=timeout or self._timeout
            )
        except requests.ReadTimeout as exc:
            raise RunpodTimeoutError(f"{what}: no answer in time") from exc
        except requests.RequestException as exc:
            # The exception text holds only the URL, never the headers (the key).
            raise RunpodUnavailableError(f"{what}: unreachable ({type(exc).__name__})") from exc
        status = response.status_code
        if status in _AUTH_STATUSES:
            raise RunpodAuthError()
        if status == 429:
            reset = rate_limit_reset_s(response.headers.get("RateLimit"), response.headers.get("Retry-After"))
            raise RunpodUnavailableError(f"{what}: rate limited", retry_after_s=reset)
        if status >= 500:
            raise RunpodUnavailableError(f"{what}: answered {status}")
        if status == 404:
            raise RunpodNotFoundError(f"{what}: not found")
        if status >= 400:
            errors = _problem_errors(response)
            # Runpod refused what we sent: a bug on our side. The errors name fields, never their values.
            logger.error("%s refused (%s): %s", what, status, "; ".join(errors) or "no errors[] given")
            raise RunpodRejectedError(f"{what} was refused ({status})", errors)
        if status == 204 or not response.content:
            return {}
        try:
            answer = response.json()
        except ValueError as exc:
            raise RunpodUnavailableError(f"{what}: answered {status} without JSON") from exc
        if not isinstance(answer, dict):
            raise RunpodUnavailableError(f"{what}: answered {status} with a JSON {type(answer).__name__}")
        return answer


def _job_body(job_input: dict[str, Any], s3_config: dict[str, str] | None, webhook: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"input": job_input}
    if s3_config:
        body["s3Config"] = s3_config
    if webhook:
        body["webhook"] = webhook
    return body


def _problem_errors(response: requests.Response) -> tuple[str, ...]:
    """The ``errors[]`` of a problem+json answer (validation failures, one per refused field)."""
    try:
        problem = response.json()
    except ValueError:
        return ()
    errors = problem.get("errors") if isinstance(problem, dict) else None
    return tuple(str(e)[:300] for e in errors or () if isinstance(e, str))


class RunpodConnector:
    """Built once per instance: one pooled HTTP session and the base URLs; hands out per-key clients."""

    def __init__(self, api_base: str, endpoint_base: str, timeout_s: float, session: requests.Session | None = None):
        self._session = session or requests.Session()
        self._api_base = api_base
        self._endpoint_base = endpoint_base
        self._timeout = timeout_s

    def client(self, api_key: str) -> RunpodClient:
        return RunpodClient(self._session, self._api_base, self._endpoint_base, api_key, self._timeout)

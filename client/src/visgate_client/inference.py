"""Inference jobs on a ready deployment, and how they are sent.

Today jobs go straight to the deployment's Runpod endpoint (``endpoint_url`` is Runpod's ``/v2/{endpoint_id}`` data
plane: ``POST /runsync``, ``POST /run``, ``GET /status/{job_id}``, with the Runpod key). When the API's own inference
routes land (``POST /v1/deployments/{id}/runsync|run``, ``GET /v1/deployments/{id}/jobs/{job_id}``), an
``ApiInference`` backend implementing :class:`InferenceBackend` replaces :class:`RunpodDataPlane` in
:class:`visgate_client.Client` — the one line marked there.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import requests
from PIL import Image

from visgate_client._http import Transport
from visgate_client.errors import JobFailedError, NotReadyError, RunpodError, WaitTimeoutError

if TYPE_CHECKING:
    from visgate_client.deployment import Deployment

FINAL_JOB_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
RUNSYNC_WAIT_MS = 90_000  # how long Runpod holds a runsync call open before answering IN_PROGRESS
POLL_INTERVAL_S = 0.5


class InferenceBackend(Protocol):
    """Where jobs of a deployment are sent; every method answers Runpod's job object ``{id, status, ...}``."""

    def runsync(self, deployment: Deployment, job_input: Mapping[str, Any]) -> dict[str, Any]: ...

    def run(self, deployment: Deployment, job_input: Mapping[str, Any]) -> dict[str, Any]: ...

    def status(self, deployment: Deployment, job_id: str) -> dict[str, Any]: ...


@dataclass
class RunpodDataPlane:
    """Jobs sent to the deployment's Runpod endpoint directly, with the Runpod API key."""

    session: requests.Session
    api_key: str
    timeout_s: float = 30.0

    def _transport(self, deployment: Deployment) -> Transport:
        if not deployment.endpoint_url:
            raise NotReadyError(f"deployment {deployment.id} has no endpoint yet (status {deployment.status})")
        headers = {"Authorization": f"Bearer {self.api_key}", "User-Agent": "visgate-client"}
        return Transport(self.session, deployment.endpoint_url.rstrip("/"), headers, (5.0, self.timeout_s))

    def _call(self, transport: Transport, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = transport.request(method, path, ok=tuple(range(400, 600)), **kwargs)
        if response.status_code >= 400:  # Runpod's errors are not the API's shape
            raise RunpodError(response.status_code, response.text.strip()[:500])
        return dict(response.json())

    def runsync(self, deployment: Deployment, job_input: Mapping[str, Any]) -> dict[str, Any]:
        transport = self._transport(deployment)
        read_timeout = RUNSYNC_WAIT_MS / 1000 + 30
        return self._call(
            transport,
            "POST",
            f"/runsync?wait={RUNSYNC_WAIT_MS}",
            json={"input": dict(job_input)},
            timeout=(5.0, read_timeout),
        )

    def run(self, deployment: Deployment, job_input: Mapping[str, Any]) -> dict[str, Any]:
        return self._call(self._transport(deployment), "POST", "/run", json={"input": dict(job_input)})

    def status(self, deployment: Deployment, job_id: str) -> dict[str, Any]:
        return self._call(self._transport(deployment), "GET", f"/status/{job_id}")


@dataclass
class JobResult:
    """A finished job: decoded images, their seeds, the worker's output and the job metrics."""

    job_id: str
    images: list[Image.Image]
    seeds: list[int | None]
    output: dict[str, Any]  # the worker's output, images without their base64 data
    delay_time_s: float | None  # Runpod's delayTime: queued until a worker took the job
    execution_time_s: float | None  # Runpod's executionTime: the worker ran the job
    inference_s: float | None  # the worker's own inference time (model forward passes)
    wall_s: float  # what this client waited, submit to result
    image_urls: list[str] = field(default_factory=list)  # images the worker uploaded to a bucket instead

    def save(self, path: str | Path, index: int = 0) -> Path:
        """Write image ``index`` to ``path`` (format from the suffix); the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.images[index].save(target)
        return target

    def metrics(self) -> dict[str, float | None]:
        return {
            "wall_s": round(self.wall_s, 3),
            "delay_s": self.delay_time_s,
            "execution_s": self.execution_time_s,
            "inference_s": self.inference_s,
        }


def job_result(job: Mapping[str, Any], wall_s: float) -> JobResult:
    """A :class:`JobResult` from Runpod's job object; a job that did not complete raises :class:`JobFailedError`."""
    job_id = str(job.get("id", ""))
    status = str(job.get("status", ""))
    output = job.get("output")
    if status != "COMPLETED" or not isinstance(output, dict) or "error" in output:
        error = job.get("error") or (output.get("error") if isinstance(output, dict) else output)
        raise JobFailedError(job_id, status or "UNKNOWN", error)
    images, seeds, urls, kept = [], [], [], []
    for item in output.get("images", []):
        seeds.append(item.get("seed"))
        if "image" in item:
            data = base64.b64decode(item["image"])
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                images.append(image.copy())
        elif "url" in item:
            urls.append(item["url"])
        kept.append({key: value for key, value in item.items() if key != "image"})
    timings = output.get("timings") or {}
    return JobResult(
        job_id=job_id,
        images=images,
        seeds=seeds,
        output={**output, "images": kept},
        delay_time_s=_ms(job.get("delayTime")),
        execution_time_s=_ms(job.get("executionTime")),
        inference_s=timings.get("inference_s"),
        wall_s=wall_s,
        image_urls=urls,
    )


def _ms(value: Any) -> float | None:
    return round(float(value) / 1000, 3) if isinstance(value, int | float) else None


class Job:
    """A job submitted with :meth:`Deployment.run`: poll it with :meth:`status`, or :meth:`wait` for its result."""

    def __init__(self, deployment: Deployment, backend: InferenceBackend, job: Mapping[str, Any]) -> None:
        self.deployment = deployment
        self.id = str(job["id"])
        self._backend = backend
        self._job = dict(job)
        self._started = time.monotonic()

    @property
    def last_status(self) -> str:
        return str(self._job.get("status", ""))

    def status(self) -> str:
        """Ask for the job's status now (IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, ...)."""
        self._job = self._backend.status(self.deployment, self.id)
        return self.last_status

    def wait(self, timeout: float | None = None, poll_s: float = POLL_INTERVAL_S) -> JobResult:
        """Poll until the job is final; its result (:class:`JobFailedError` if it did not complete)."""
        return _settle(self._backend, self.deployment, self._job, started=self._started, timeout=timeout, poll_s=poll_s)


def _settle(
    backend: InferenceBackend,
    deployment: Deployment,
    job: Mapping[str, Any],
    *,
    started: float,
    timeout: float | None,
    poll_s: float = POLL_INTERVAL_S,
) -> JobResult:
    deadline = None if timeout is None else started + timeout
    current = dict(job)
    while current.get("status") not in FINAL_JOB_STATUSES:
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeoutError(f"job {current.get('id')}", timeout or 0, current.get("status"))
        time.sleep(poll_s)
        current = backend.status(deployment, str(current["id"]))
    return job_result(current, time.monotonic() - started)


def runsync(
    backend: InferenceBackend, deployment: Deployment, job_input: Mapping[str, Any], timeout: float | None
) -> JobResult:
    """One job, waited for: runsync, then polling if Runpod answered before the job finished."""
    started = time.monotonic()
    return _settle(backend, deployment, backend.runsync(deployment, job_input), started=started, timeout=timeout)

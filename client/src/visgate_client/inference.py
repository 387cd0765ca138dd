"""Inference jobs on a ready deployment, sent through the Visgate API.

Jobs go to the API's inference routes (``POST /v1/deployments/{id}/runsync|run``, ``GET .../jobs``,
``GET .../jobs/{job_id}``, ``POST .../jobs/{job_id}/cancel``) with the client's own key (your Runpod key, or the
deployment's invoke key): the API checks the input against the worker's own model, calls Runpod with the key it
holds and records the job; its errors are the client's typed errors (409 ``deployment_not_ready`` is
:class:`~visgate_client.errors.NotReadyError`, Runpod's failures are :class:`~visgate_client.errors.RunpodError`).

A job's inline output (base64 images) is only in the one answer that saw the job end (runsync's 200, or the GET that
observed it): the API does not store it. So a :class:`Job` keeps that answer and never asks about a final job again.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from visgate_client._http import Transport
from visgate_client.errors import JobFailedError, JobOutputUnavailableError, WaitTimeoutError

FINAL_JOB_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
# How long the API holds a runsync open before answering 202: short of what proxies between a client and the API
# commonly allow (60 s), so the answer is a 202 to poll rather than a cut connection.
RUNSYNC_WAIT_MS = 45_000
RUNSYNC_WAIT_MIN_MS = 1_000  # the API refuses a shorter wait
RUNSYNC_READ_GRACE_S = 30.0  # the read timeout of a runsync: its wait, plus this for the API's own work
# Polling a job: the first GET after POLL_INTERVAL_S, each next one POLL_GROWTH times later, up to POLL_MAX_S. Early
# polls are close because the API's own job watch checks early and often too (1, 2, 3, 5, ... s apart): the first
# observer of the end gets the inline output, so a client that polls sooner loses it less often. Later polls are
# sparse because every GET counts against the tenant's rate limit (120 a minute by default).
POLL_INTERVAL_S = 0.25
POLL_GROWTH = 1.25
POLL_MAX_S = 2.0


@dataclass(frozen=True)
class DeploymentJobs:
    """The jobs of one deployment (``id``), through the API's inference routes on the client's transport (its key,
    its retries, its errors). A :class:`~visgate_client.Deployment` sends its jobs here, and each :class:`Job` reads
    and cancels itself here.

    Submissions (run, runsync, cancel) are POSTs without an Idempotency-Key, so they are never retried: a retry
    could run a job twice. Reads (a job, the list) are retried like every GET.
    """

    transport: Transport
    id: str  # the deployment's

    @property
    def _path(self) -> str:
        return f"/v1/deployments/{self.id}"

    def run(self, job_input: Mapping[str, Any], *, webhook_url: str | None = None) -> Job:
        """``POST .../run``: the job, submitted."""
        response = self.transport.request("POST", f"{self._path}/run", json=job_body(job_input, webhook_url))
        return Job(self, dict(response.json()))

    def runsync(
        self, job_input: Mapping[str, Any], timeout: float | None = 300.0, *, webhook_url: str | None = None
    ) -> JobResult:
        """``POST .../runsync``, then polling if the API answered before the job ended: its result."""
        started = time.monotonic()
        wait_ms = runsync_wait_ms(timeout)
        response = self.transport.request(
            "POST",
            f"{self._path}/runsync",
            params={"wait": wait_ms},
            json=job_body(job_input, webhook_url),
            timeout=(self.transport.timeout[0], wait_ms / 1000 + RUNSYNC_READ_GRACE_S),
        )
        return Job(self, _flat(response.json()), started=started).wait(timeout)

    def job(self, job_id: str) -> Job:
        """``GET .../jobs/{job_id}``: the job as the API sees it now."""
        return Job(self, self.read(job_id))

    def jobs(self, page_size: int | None = None) -> Iterator[Job]:
        """``GET .../jobs``, page after page: every job the API still has a record of, newest first."""
        token: str | None = None
        while True:
            page = self.transport.get_json(f"{self._path}/jobs", limit=page_size, page_token=token)
            for view in page.get("jobs", []):
                yield Job(self, view)
            token = page.get("next_page_token")
            if not token:
                return

    def read(self, job_id: str) -> dict[str, Any]:
        """``GET .../jobs/{job_id}``: the API's answer (the job's view)."""
        return dict(self.transport.request("GET", f"{self._path}/jobs/{job_id}").json())

    def cancel(self, job_id: str) -> dict[str, Any]:
        """``POST .../jobs/{job_id}/cancel``: the API's answer (the job's view after)."""
        return dict(self.transport.request("POST", f"{self._path}/jobs/{job_id}/cancel").json())


def _flat(answer: Mapping[str, Any]) -> dict[str, Any]:
    """A runsync answer with its ``metrics`` (delay_ms, execution_ms, estimated_cost_usd, pool) at the top level,
    where a job view has them, so every answer of a job reads the same."""
    flat = {key: value for key, value in answer.items() if key != "metrics"}
    return {**flat, **(answer.get("metrics") or {})}


def job_body(job_input: Mapping[str, Any], webhook_url: str | None) -> dict[str, Any]:
    """The body of run and runsync: the job input, and where the API announces the job's end (one signed POST)."""
    body: dict[str, Any] = {"input": dict(job_input)}
    if webhook_url is not None:
        body["webhook_url"] = webhook_url
    return body


def runsync_wait_ms(timeout: float | None) -> int:
    """How long to ask the API to hold a runsync: :data:`RUNSYNC_WAIT_MS`, or less when the caller waits less."""
    if timeout is None:
        return RUNSYNC_WAIT_MS
    return max(RUNSYNC_WAIT_MIN_MS, min(RUNSYNC_WAIT_MS, int(timeout * 1000)))


@dataclass
class JobResult:
    """A finished job: decoded images, their seeds, the worker's output and the job metrics."""

    job_id: str
    images: list[Image.Image]
    seeds: list[int | None]
    output: dict[str, Any]  # the worker's output, images without their base64 data
    delay_time_s: float | None  # queued until a worker took the job (Runpod's delayTime: the API's delay_ms)
    execution_time_s: float | None  # the worker ran the job (Runpod's executionTime: the API's execution_ms)
    inference_s: float | None  # the worker's own inference time (model forward passes)
    wall_s: float  # what this client waited, submit to result
    image_urls: list[str] = field(default_factory=list)  # images the worker uploaded to a bucket instead
    estimated_cost_usd: float | None = None  # execution time x the pool's serverless price: Runpod's bill is the truth
    pool: str | None = None  # the GPU pool the job ran on

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
            "estimated_cost_usd": self.estimated_cost_usd,
        }


def job_result(view: Mapping[str, Any], wall_s: float) -> JobResult:
    """A :class:`JobResult` from the answer that saw the job end.

    Raises:
        JobFailedError: the job did not complete, or the worker answered an error.
        JobOutputUnavailableError: it completed, but Runpod no longer keeps its inline output.
    """
    job_id = str(view.get("job_id", ""))
    status = str(view.get("status", ""))
    output = view.get("output")
    if status != "COMPLETED" or (isinstance(output, dict) and "error" in output):
        error = view.get("error") or (output.get("error") if isinstance(output, dict) else output)
        raise JobFailedError(job_id, status or "UNKNOWN", error)
    if output is None and view.get("output_refs"):  # uploaded images: the record keeps their URLs
        output = {"images": [{"url": url} for url in view["output_refs"]]}
    if output is None:
        raise JobOutputUnavailableError(job_id, dict(view))
    if not isinstance(output, dict):
        raise JobFailedError(job_id, status, f"the worker's output is not an object: {str(output)[:200]}")
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
        delay_time_s=_seconds(view.get("delay_ms")),
        execution_time_s=_seconds(view.get("execution_ms")),
        inference_s=timings.get("inference_s"),
        wall_s=wall_s,
        image_urls=urls,
        estimated_cost_usd=view.get("estimated_cost_usd"),
        pool=view.get("pool"),
    )


def _seconds(ms: Any) -> float | None:
    return round(float(ms) / 1000, 3) if isinstance(ms, int | float) else None


class Job:
    """A job of a deployment: the API's last answer about it (``.view``, the API's field names; a runsync answer's
    ``metrics`` sit at the top level, where a job view has them).

    Poll it with :meth:`status`, :meth:`wait` for its result, or :meth:`cancel` it. Once an answer says the job
    is final, that answer (the only one with the inline output) is kept and the API is not asked again.
    """

    def __init__(self, deployment: DeploymentJobs, answer: Mapping[str, Any], *, started: float | None = None) -> None:
        self.deployment = deployment  # where it reads and cancels itself; ``.id`` is the deployment's id
        self.id = str(answer["job_id"])
        self.view: dict[str, Any] = dict(answer)
        self._started = time.monotonic() if started is None else started  # when it was submitted, for wall_s

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.last_status} of {self.deployment.id}>"

    @property
    def last_status(self) -> str:
        """The status in the last answer (IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED, TIMED_OUT)."""
        return str(self.view.get("status", ""))

    @property
    def final(self) -> bool:
        return self.last_status in FINAL_JOB_STATUSES

    def status(self) -> str:
        """The job's status now (``GET .../jobs/{job_id}``); a final job's is known, so it is not asked again."""
        if not self.final:
            self.view = self.deployment.read(self.id)
        return self.last_status

    def cancel(self) -> Job:
        """Cancel the job (``POST .../jobs/{job_id}/cancel``); a final job stays as it was. The job, updated."""
        if not self.final:
            self.view = self.deployment.cancel(self.id)
        return self

    def wait(self, timeout: float | None = None, poll_s: float = POLL_INTERVAL_S) -> JobResult:
        """Poll until the job is final (``timeout`` counts from its submission); its result. The first poll comes
        after ``poll_s``, the next ones further apart (up to :data:`POLL_MAX_S`).

        Raises:
            JobFailedError: it ended other than COMPLETED.
            JobOutputUnavailableError: Runpod no longer keeps its inline output (see the error).
            WaitTimeoutError: it was not final within ``timeout`` seconds.
        """
        deadline = None if timeout is None else self._started + timeout
        delay = poll_s
        while not self.final:
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeoutError(f"job {self.id}", timeout or 0, self.last_status)
            time.sleep(delay if deadline is None else min(delay, max(deadline - time.monotonic(), 0.0)))
            delay = min(delay * POLL_GROWTH, max(POLL_MAX_S, poll_s))
            self.status()
        return job_result(self.view, time.monotonic() - self._started)

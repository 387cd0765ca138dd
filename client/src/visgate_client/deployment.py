"""One deployment as a client sees it: its public view, its event stream, its logs, stop/start, its jobs and its
invoke keys."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
import urllib3.exceptions

from visgate_client._http import STREAM_TIMEOUT, Transport, sse_events
from visgate_client.errors import DeploymentDeletedError, DeploymentFailedError, WaitTimeoutError
from visgate_client.inference import DeploymentJobs, Job, JobResult
from visgate_client.models import InvokeKey

PHASES = ("validating", "selecting_gpu", "creating_endpoint", "downloading_model", "loading_model", "ready")
TERMINAL = frozenset({"failed", "deleted"})
# What a wait for "ready" stops at: ready, or a status from which it can no longer get there by itself.
SETTLED = frozenset({"ready", "stopped", "failed", "deleting", "deleted"})
RECONNECT_CAP_S = 5.0
# What a cut stream looks like to requests/urllib3, depending on where the bytes stopped.
_STREAM_CUT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
)


@dataclass(frozen=True)
class Phase:
    """A status the deployment entered, and when (the server's clock)."""

    name: str
    at: datetime


@dataclass(frozen=True)
class Update:
    """One change seen on the stream: the new view and the phases entered since the last update, in order."""

    view: dict[str, Any]
    new_phases: tuple[Phase, ...]

    @property
    def status(self) -> str:
        return str(self.view.get("status"))


@dataclass(frozen=True)
class LogLine:
    time: datetime | None
    level: str | None
    message: str | None


def parse_time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def phases_of(view: Mapping[str, Any]) -> list[Phase]:
    """The phases in ``phase_timestamps``, oldest first."""
    stamps = view.get("phase_timestamps") or {}
    found = [Phase(name, at) for name, value in stamps.items() if (at := parse_time(value)) is not None]
    return sorted(found, key=lambda phase: phase.at)


class Deployment:
    """A deployment: the last view seen (``.view``), refreshed by :meth:`refresh` and by :meth:`wait`/:meth:`watch`.

    Built from the client's transport (``client.transport``) and a view with at least ``deployment_id``; its jobs go
    through :class:`~visgate_client.inference.DeploymentJobs` on the same transport.
    """

    def __init__(self, transport: Transport, view: Mapping[str, Any]) -> None:
        self.view: dict[str, Any] = dict(view)
        self.id: str = str(view["deployment_id"])
        self._transport = transport
        self._jobs = DeploymentJobs(transport, self.id)

    def __repr__(self) -> str:
        return f"<Deployment {self.id} {self.status} {self.view.get('hf_model_id', '')}>"

    # --- what the view says --------------------------------------------------------------------------------------

    @property
    def status(self) -> str:
        return str(self.view.get("status"))

    @property
    def model(self) -> str | None:
        return self.view.get("hf_model_id")

    @property
    def endpoint_id(self) -> str | None:
        return self.view.get("endpoint_id")

    @property
    def endpoint_url(self) -> str | None:
        return self.view.get("endpoint_url")

    @property
    def error(self) -> dict[str, Any] | None:
        return self.view.get("error")

    @property
    def timings(self) -> dict[str, Any]:
        return dict(self.view.get("timings") or {})

    @property
    def progress(self) -> dict[str, Any]:
        return dict(self.view.get("progress") or {})

    @property
    def phases(self) -> list[Phase]:
        return phases_of(self.view)

    # --- calls -----------------------------------------------------------------------------------------------------

    def refresh(self) -> Deployment:
        """Read the current view (``GET /v1/deployments/{id}``)."""
        self.view = self._transport.get_json(f"/v1/deployments/{self.id}")
        return self

    def logs(self) -> list[LogLine]:
        """The deployment's event log, oldest first (bounded by the server)."""
        body = self._transport.get_json(f"/v1/deployments/{self.id}/logs")
        return [
            LogLine(parse_time(line.get("time")), line.get("level"), line.get("message"))
            for line in body.get("events", [])
        ]

    def delete(self, wait: bool = False, timeout: float | None = None) -> Deployment:
        """Ask for teardown (idempotent); with ``wait``, follow the stream until the deployment is ``deleted``."""
        response = self._transport.request("DELETE", f"/v1/deployments/{self.id}")
        self.view["status"] = response.json().get("status", "deleting")
        if wait and self.status != "deleted":
            for _ in self.watch(timeout=timeout, until=frozenset({"deleted"})):
                pass
        return self

    def watch(self, timeout: float | None = None, until: Collection[str] = SETTLED) -> Iterator[Update]:
        """Follow the SSE stream, one :class:`Update` per change, until the status is in ``until`` (or terminal).

        The stream is resumed after a cut or a server-side close, with ``Last-Event-ID``; events already seen are
        skipped, and the phases entered while disconnected come from the view's ``phase_timestamps``, so each phase
        is reported once, in order. Raises :class:`WaitTimeoutError` after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last_id: int | None = None
        seen: set[tuple[str, datetime]] = set()
        retry_s = 1.0
        while True:
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if last_id is not None:
                headers["Last-Event-ID"] = str(last_id)
            read_timeout = STREAM_TIMEOUT[1] if deadline is None else max(min(STREAM_TIMEOUT[1], _left(deadline)), 1)
            try:
                with self._transport.request(
                    "GET",
                    f"/v1/deployments/{self.id}/stream",
                    headers=headers,
                    stream=True,
                    timeout=(STREAM_TIMEOUT[0], read_timeout),
                ) as response:
                    for event in sse_events(response):
                        if event.retry_ms is not None:
                            retry_s = min(event.retry_ms / 1000, RECONNECT_CAP_S)
                        if event.event != "deployment":
                            continue
                        seq = int(event.id) if event.id and event.id.isdigit() else None
                        if seq is not None and last_id is not None and seq <= last_id:
                            continue  # replayed after a reconnect
                        last_id = seq if seq is not None else last_id
                        self.view = json.loads(event.data)
                        fresh = tuple(p for p in self.phases if (p.name, p.at) not in seen)
                        seen.update((p.name, p.at) for p in fresh)
                        yield Update(dict(self.view), fresh)
                        if self.status in until or self.status in TERMINAL:
                            return
                        _check(deadline, timeout, self)
            except _STREAM_CUT:
                pass  # resumed below
            _check(deadline, timeout, self)
            time.sleep(retry_s if deadline is None else min(retry_s, _left(deadline)))

    def wait(self, timeout: float | None = None, on_update: Callable[[Update], None] | None = None) -> Deployment:
        """Block until the deployment is ``ready``; raises :class:`DeploymentFailedError` (with the reason) if it
        fails, :class:`DeploymentDeletedError` if it is deleted or stopped first, :class:`WaitTimeoutError`."""
        for update in self.watch(timeout=timeout):
            if on_update is not None:
                on_update(update)
        if self.status == "ready":
            return self
        if self.status == "failed":
            error = self.error or {}
            raise DeploymentFailedError(
                self.id, str(error.get("code", "unknown")), str(error.get("message", "")), self.view
            )
        raise DeploymentDeletedError(self.id, self.status)

    def stop(self) -> Deployment:
        """Scale the workers to 0 and keep the endpoint (``POST .../stop``): nothing bills until :meth:`start`.
        Idempotent; :class:`~visgate_client.errors.InvalidStateError` unless ``ready`` (or ``stopped``)."""
        return self._lifecycle("stop")

    def start(self) -> Deployment:
        """Restore the workers of a ``stopped`` deployment (``POST .../start``): the worker proves the model again,
        so follow it with :meth:`wait` until ``ready``. Idempotent; ``InvalidStateError`` unless ``stopped``."""
        return self._lifecycle("start")

    def _lifecycle(self, action: str) -> Deployment:
        response = self._transport.request("POST", f"/v1/deployments/{self.id}/{action}")
        self.view["status"] = response.json()["status"]
        return self

    # --- jobs ----------------------------------------------------------------------------------------------------

    def run(self, job_input: Mapping[str, Any], *, webhook_url: str | None = None) -> Job:
        """Submit one job without waiting (``POST .../run``); a :class:`~visgate_client.inference.Job` to poll,
        wait for or cancel. ``webhook_url`` (https) gets one signed POST when the job ends."""
        return self._jobs.run(job_input, webhook_url=webhook_url)

    def runsync(
        self, job_input: Mapping[str, Any], timeout: float | None = 300.0, *, webhook_url: str | None = None
    ) -> JobResult:
        """Run one job and wait for it (``POST .../runsync``, then polling if the API answered before it ended):
        decoded images (PIL), seeds and the job metrics. ``webhook_url`` (https) gets one signed POST at its end."""
        return self._jobs.runsync(job_input, timeout, webhook_url=webhook_url)

    def job(self, job_id: str) -> Job:
        """One job of this deployment as the API sees it now (``GET .../jobs/{job_id}``)."""
        return self._jobs.job(job_id)

    def jobs(self, page_size: int | None = None) -> Iterator[Job]:
        """Every job of this deployment the API still has a record of, newest first, page after page."""
        return self._jobs.jobs(page_size)

    # --- invoke keys ---------------------------------------------------------------------------------------------

    def create_key(self) -> InvokeKey:
        """A new invoke key for this deployment (``POST .../keys``): ``.key`` (``vdk_...``) is shown this once.
        An app holding it can run jobs here and read this deployment, nothing else: ``Client(api_key=key.key)``."""
        response = self._transport.request("POST", f"/v1/deployments/{self.id}/keys")
        return InvokeKey.from_json(response.json())

    def keys(self) -> list[InvokeKey]:
        """This deployment's invoke keys, without the keys themselves (ids, prefixes, creation times)."""
        body = self._transport.get_json(f"/v1/deployments/{self.id}/keys")
        return [InvokeKey.from_json(item) for item in body.get("keys", [])]

    def revoke_key(self, key_id: str) -> None:
        """Revoke an invoke key (``DELETE .../keys/{key_id}``): refused from now on."""
        self._transport.request("DELETE", f"/v1/deployments/{self.id}/keys/{key_id}")


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)


def _check(deadline: float | None, timeout: float | None, deployment: Deployment) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise WaitTimeoutError(f"deployment {deployment.id}", timeout or 0, deployment.status)

"""Signed phase reports from the worker to the callback function (docs/contracts.md "Phase reports").

Each report is one :class:`shared.messages.PhaseReport` (the schema the callback function parses), POSTed as JSON
signed with ``shared.signing.sign_headers`` (Standard Webhooks). Server errors and connection failures are retried
with exponential backoff, reusing the message id so the receiver can dedupe (it answers a repeat 409
``report_replayed``, which on a retry means an earlier attempt was taken); a 4xx is final (the receiver understood
and refused: retrying cannot help). A report that still fails is logged, never raised: the worker's real proof of
life is the warm-up job, and the readiness watchdog covers silence.

With ``background=True`` (what ``worker.main`` uses) the progress reports (``downloading_model``, ``loading_model``)
and ``ready`` are handed to one sender thread that delivers them in order, so neither the download nor the job
loop waits on the network; ``ready`` is still only ever sent after the warm-up passed. ``failed`` drains what is
queued and is sent in the caller's thread, since the process exits right after it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

import requests

from shared.lifecycle import FailureReason
from shared.messages import PhaseReport
from shared.signing import sign_headers
from worker.settings import ReportSettings

logger = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 1000
DRAIN_TIMEOUT_S = 30.0  # how long ``failed`` waits for queued reports before it is sent anyway


class PhaseReporter:
    """Sends the phases of one worker start-up."""

    def __init__(
        self,
        deployment_id: str,
        url: str | None,
        secret: str | None,
        *,
        session: requests.Session | None = None,
        attempts: int = 5,
        backoff_s: float = 0.5,
        timeout_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        background: bool = False,
    ) -> None:
        """Report to ``url`` signed with ``secret``; with no URL, reports are only logged (local runs).

        Args:
            deployment_id: the deployment the worker serves.
            url: the callback URL (VISGATE_CALLBACK_URL).
            secret: the ``whsec_`` signing secret (VISGATE_CALLBACK_SECRET).
            session: HTTP session to reuse.
            attempts: tries per report, the first included.
            backoff_s: wait before the first retry; doubles each time, capped at 8 s.
            timeout_s: per-request timeout.
            sleep: injectable for tests.
            background: deliver progress reports and ``ready`` from one sender thread, in order (see above).
        """
        if url and not secret:
            raise ValueError("VISGATE_CALLBACK_SECRET is required with VISGATE_CALLBACK_URL")
        self.deployment_id = deployment_id
        self._url = url
        self._secret = secret
        self._session = session or requests.Session()
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._timeout_s = timeout_s
        self._sleep = sleep
        self._queue: queue.Queue[PhaseReport] | None = queue.Queue() if background else None
        if self._queue is not None:
            threading.Thread(target=self._deliver_queued, name="phase-reports", daemon=True).start()

    @classmethod
    def from_settings(cls, settings: ReportSettings, *, background: bool = False) -> PhaseReporter:
        """The reporter the environment configures."""
        secret = settings.visgate_callback_secret
        return cls(
            settings.visgate_deployment_id,
            settings.visgate_callback_url,
            secret.get_secret_value() if secret else None,
            background=background,
        )

    def downloading(self, bytes_done: int, bytes_total: int) -> bool:
        """Report ``downloading_model`` with byte progress."""
        return self._report(self._new("downloading_model", bytes_done=bytes_done, bytes_total=bytes_total))

    def loading(self) -> bool:
        """Report ``loading_model``."""
        return self._report(self._new("loading_model"))

    def ready(
        self,
        download_s: float,
        load_s: float,
        warmup_s: float,
        loaded_from_cache: bool,
        *,
        gpu_type_id: str | None = None,
        extra_timings: dict[str, Any] | None = None,
    ) -> bool:
        """Report ``ready`` with the start-up timings (and the GPU type, when known); ``extra_timings`` adds the
        load's details (the fused LoRA adapters, the effective speed settings) to ``timings``."""
        timings: dict[str, Any] = {
            "download_s": round(download_s, 3),
            "load_s": round(load_s, 3),
            "warmup_s": round(warmup_s, 3),
            **(extra_timings or {}),
        }
        report = self._new("ready", timings=timings, loaded_from_cache=loaded_from_cache, gpu_type_id=gpu_type_id)
        return self._report(report)

    def failed(self, reason: FailureReason | str, message: str) -> bool:
        """Report ``failed`` with a reason code and a short message, after the reports queued before it."""
        self.drain()
        return self.send(self._new("failed", reason=FailureReason(reason), message=message[:MAX_MESSAGE_CHARS]))

    def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> bool:
        """Wait until the queued reports were delivered (or given up); False when ``timeout_s`` passed first."""
        if self._queue is None:
            return True
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def _new(self, phase: str, **fields: Any) -> PhaseReport:
        return PhaseReport.model_validate({"deployment_id": self.deployment_id, "phase": phase, **fields})

    def _report(self, report: PhaseReport) -> bool:
        """Send now, or queue for the sender thread (True: accepted for delivery)."""
        if self._queue is None:
            return self.send(report)
        self._queue.put(report)
        return True

    def _deliver_queued(self) -> None:
        assert self._queue is not None
        while True:
            report = self._queue.get()
            try:
                self.send(report)
            except Exception:  # a bug here must not silently stop every later report
                logger.exception("phase report %s not sent", report.phase)
            finally:
                self._queue.task_done()

    def send(self, report: PhaseReport) -> bool:
        """POST one report now; True when the callback accepted it (2xx)."""
        fields = report.model_dump(mode="json", exclude_none=True, exclude={"schema_version", "deployment_id"})
        logger.info("phase %s", report.phase, extra={"report": fields})
        if not self._url or not self._secret:
            return True
        body = report.model_dump_json(exclude_none=True).encode()
        msg_id = f"msg_{uuid.uuid4().hex}"
        for attempt in range(1, self._attempts + 1):
            # Signed per attempt (fresh timestamp), same id: a retry is the same message to the receiver.
            headers = {"Content-Type": "application/json", **sign_headers(self._secret, body, msg_id=msg_id)}
            try:
                response = self._session.post(self._url, data=body, headers=headers, timeout=self._timeout_s)
            except requests.RequestException as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.ok:
                    return True
                if response.status_code == HTTPStatus.CONFLICT and attempt > 1:
                    # report_replayed: an earlier attempt of this message was taken (its answer was lost).
                    return True
                if response.status_code < 500:
                    logger.error("phase report refused", extra={"status": response.status_code, "phase": report.phase})
                    return False
                problem = f"HTTP {response.status_code}"
            if attempt < self._attempts:
                delay = min(self._backoff_s * 2 ** (attempt - 1), 8.0)
                logger.warning("phase report failed (%s); retrying in %.1f s", problem, delay)
                self._sleep(delay)
        logger.error("phase report not delivered", extra={"phase": report.phase, "attempts": self._attempts})
        return False


@contextmanager
def progress_ticker(reporter: PhaseReporter, interval_s: float = 2.0) -> Iterator[Callable[[int, int], None]]:
    """A progress callback for download threads; a background thread reports the latest value every
    ``interval_s`` (so download threads never wait on the network of a report), and once more at the end."""
    latest: list[tuple[int, int]] = []
    lock = threading.Lock()
    stop = threading.Event()
    sent: list[tuple[int, int]] = []

    def record(done: int, total: int) -> None:
        with lock:
            latest[:] = [(done, total)]

    def flush() -> None:
        with lock:
            current = latest[0] if latest else None
        if current is not None and (not sent or sent[-1] != current):
            sent.append(current)
            reporter.downloading(*current)

    def loop() -> None:
        while not stop.wait(interval_s):
            flush()

    thread = threading.Thread(target=loop, name="progress", daemon=True)
    thread.start()
    try:
        yield record
    finally:
        stop.set()
        thread.join()
        flush()

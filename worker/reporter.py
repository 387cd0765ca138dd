"""Signed phase reports from the worker to the callback function (docs/contracts.md "Phase reports").

Each report is one JSON POST signed with ``shared.signing.sign_headers`` (Standard Webhooks). Server errors and
connection failures are retried with exponential backoff, reusing the message id so the receiver can dedupe;
a 4xx is final (the receiver understood and refused: retrying cannot help). A report that still fails is logged,
never raised: the worker's real proof of life is the warm-up job, and the readiness watchdog covers silence.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import requests

from shared.signing import sign_headers
from worker.errors import Reason
from worker.settings import ReportSettings

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAX_MESSAGE_CHARS = 1000


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

    @classmethod
    def from_settings(cls, settings: ReportSettings) -> PhaseReporter:
        """The reporter the environment configures."""
        secret = settings.visgate_callback_secret
        return cls(
            settings.visgate_deployment_id,
            settings.visgate_callback_url,
            secret.get_secret_value() if secret else None,
        )

    def downloading(self, bytes_done: int, bytes_total: int) -> bool:
        """Report ``downloading_model`` with byte progress."""
        return self.send({"phase": "downloading_model", "bytes_done": bytes_done, "bytes_total": bytes_total})

    def loading(self) -> bool:
        """Report ``loading_model``."""
        return self.send({"phase": "loading_model"})

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
        fields: dict[str, Any] = {"phase": "ready", "timings": timings, "loaded_from_cache": loaded_from_cache}
        if gpu_type_id:
            fields["gpu_type_id"] = gpu_type_id
        return self.send(fields)

    def failed(self, reason: Reason, message: str) -> bool:
        """Report ``failed`` with a reason code and a short message."""
        return self.send({"phase": "failed", "reason": reason, "message": message[:MAX_MESSAGE_CHARS]})

    def send(self, fields: dict[str, Any]) -> bool:
        """POST one report; True when the callback accepted it (2xx)."""
        report = {"schema_version": SCHEMA_VERSION, "deployment_id": self.deployment_id, **fields}
        logger.info("phase %s", fields["phase"], extra={"report": fields})
        if not self._url or not self._secret:
            return True
        body = json.dumps(report, separators=(",", ":")).encode()
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
                if response.status_code < 500:
                    logger.error(
                        "phase report refused", extra={"status": response.status_code, "phase": fields["phase"]}
                    )
                    return False
                problem = f"HTTP {response.status_code}"
            if attempt < self._attempts:
                delay = min(self._backoff_s * 2 ** (attempt - 1), 8.0)
                logger.warning("phase report failed (%s); retrying in %.1f s", problem, delay)
                self._sleep(delay)
        logger.error("phase report not delivered", extra={"phase": fields["phase"], "attempts": self._attempts})
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

"""HTTP plumbing: one pooled session, timeouts on every call, retries only where a retry is safe, SSE parsing."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from visgate_client.errors import error_from_response

# Timeouts in seconds: (connect, read). The stream's read timeout outlasts the server's keep-alive comments (15 s).
DEFAULT_TIMEOUT = (5.0, 30.0)
STREAM_TIMEOUT = (5.0, 45.0)
RETRY_STATUSES = frozenset({429, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})  # the API documents DELETE as idempotent


def new_session(pool_size: int = 10) -> requests.Session:
    """A session that keeps connections alive (one pool per host)."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def retry_safe(method: str, headers: Mapping[str, str]) -> bool:
    """Whether sending the request twice is harmless: idempotent methods, or a POST with an Idempotency-Key."""
    return method.upper() in IDEMPOTENT_METHODS or any(key.lower() == "idempotency-key" for key in headers)


@dataclass
class Transport:
    """Sends requests to one base URL with the caller's headers, retrying what is safe to retry."""

    session: requests.Session
    base_url: str
    headers: Mapping[str, str]
    timeout: tuple[float, float] = DEFAULT_TIMEOUT
    max_retries: int = 3
    backoff_s: float = 0.5

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: tuple[float, float] | None = None,
        ok: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> requests.Response:
        """One call; an error answer raises its typed :class:`~visgate_client.errors.ApiError`.

        Connection failures and 429/502/503/504 answers are retried (with jittered backoff, honouring Retry-After)
        only when :func:`retry_safe` says so; ``ok`` lists statuses below 400 or above that are not errors.
        """
        all_headers = {**self.headers, **(headers or {})}
        safe = retry_safe(method, all_headers)
        attempts = self.max_retries + 1 if safe else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self.session.request(
                    method, self.url(path), headers=all_headers, timeout=timeout or self.timeout, **kwargs
                )
            except (requests.ConnectionError, requests.Timeout):
                if last:
                    raise
                self._sleep(attempt, None)
                continue
            if response.status_code in RETRY_STATUSES and not last:
                retry_after = response.headers.get("Retry-After", "")
                response.close()
                self._sleep(attempt, float(retry_after) if retry_after.isdigit() else None)
                continue
            if response.status_code >= 400 and response.status_code not in ok:
                raise error_from_response(response)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def get_json(self, path: str, **params: Any) -> dict[str, Any]:
        """``GET path`` with the query ``params`` that are not None; the JSON object answered."""
        response = self.request("GET", path, params={k: v for k, v in params.items() if v is not None})
        return dict(response.json())

    def _sleep(self, attempt: int, retry_after: float | None) -> None:
        delay = retry_after if retry_after is not None else self.backoff_s * (2**attempt)
        time.sleep(min(delay, 30.0) * (1.0 if retry_after is not None else random.uniform(0.5, 1.0)))


@dataclass(frozen=True)
class SseEvent:
    """One Server-Sent Event."""

    event: str
    data: str
    id: str | None
    retry_ms: int | None


def sse_events(response: requests.Response) -> Iterator[SseEvent]:
    """The events of a ``text/event-stream`` answer, as the HTML spec parses them (comments skipped)."""
    event, data, event_id, retry = "message", list[str](), None, None
    for line in _lines(response):
        if line == "":
            if data or retry is not None:
                yield SseEvent(event, "\n".join(data), event_id, retry)
            event, data, retry = "message", [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value
        elif name == "retry" and value.isdigit():
            retry = int(value)


def _lines(response: requests.Response) -> Iterator[str]:
    """Lines as the bytes arrive (``iter_lines`` would wait for a full chunk); CR LF, LF or CR end a line."""
    buffer = b""
    for chunk in response.iter_content(chunk_size=None):
        buffer += chunk
        *complete, buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        for line in complete:
            yield line.decode("utf-8")

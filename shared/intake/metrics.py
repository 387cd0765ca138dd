"""Request counters that survive instances: counted in memory, folded into a few shared Firestore shards.

The request path only touches memory. A daemon timer writes what is pending a few seconds after the first count
(one write per flush, with Increment transforms, into one of a fixed set of shard documents), and once more when
the interpreter exits, so counts become durable without waiting for a later request.

``GET /metrics`` is served only with ``Authorization: Bearer <METRICS_TOKEN>`` and renders at most every
:data:`METRICS_CACHE_S` per instance (it runs a COUNT aggregation per status); ``GET /health`` reads Firestore at
most every :data:`HEALTH_CHECK_S` per instance. Both are public routes: neither may become a way to make us read.
"""

from __future__ import annotations

import atexit
import hmac
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

from flask import Request
from pydantic import SecretStr

from shared.errors import ApiError
from shared.store import DeploymentStore

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 5.0
METRICS_CACHE_S = 30.0
HEALTH_CHECK_S = 10.0

_T = TypeVar("_T")


class TimedCache(Generic[_T]):
    """``compute()``'s outcome, reused for ``ttl_s`` per instance: its value, or the exception it raised (a failed
    health check stays failed for the window, rather than letting each request read again)."""

    def __init__(self, ttl_s: float, compute: Callable[[], _T], clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._compute = compute
        self._clock = clock
        self._lock = threading.Lock()
        self._at: float | None = None
        self._value: _T | None = None
        self._error: Exception | None = None

    def get(self) -> _T:
        with self._lock:  # one computation at a time: concurrent requests wait for it instead of repeating it
            now = self._clock()
            if self._at is None or now - self._at >= self._ttl_s:
                try:
                    self._value, self._error = self._compute(), None
                except Exception as exc:
                    self._value, self._error = None, exc
                self._at = now
            if self._error is not None:
                raise self._error.with_traceback(None)
            return self._value  # type: ignore[return-value]  # set with _error None


def check_metrics_token(request: Request, token: SecretStr | None) -> None:
    """``Authorization: Bearer <METRICS_TOKEN>``, else 401 (always 401 where no token is configured).

    Raises:
        ApiError: 401 ``unauthenticated``.
    """
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    given = value.strip().encode()
    expected = token.get_secret_value().encode() if token is not None else b""
    if not (expected and scheme.lower() == "bearer" and hmac.compare_digest(given, expected)):
        raise ApiError(
            401,
            "unauthenticated",
            "GET /metrics needs 'Authorization: Bearer <METRICS_TOKEN>'",
            headers={"WWW-Authenticate": 'Bearer realm="visgate-metrics"'},
        )


class RequestCounters:
    def __init__(self, store: DeploymentStore, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self._store = store
        self._interval = flush_interval_s
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}
        self._timer: threading.Timer | None = None
        _LIVE.add(self)

    def record(self, route: str, code: int) -> None:
        """Count one request (in memory); the first count after a flush arms the flush timer."""
        key = f"{route}|{code}"
        with self._lock:
            self._pending[key] = self._pending.get(key, 0) + 1
            if self._timer is None:
                self._timer = threading.Timer(self._interval, self._flush_on_timer)
                self._timer.daemon = True  # never holds the process open; the exit hook flushes instead
                self._timer.start()

    def _flush_on_timer(self) -> None:
        with self._lock:
            self._timer = None
        self.flush()

    def flush(self) -> None:
        """Write the pending counts; if the write fails they stay pending for the next flush."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            self._store.add_request_counts(pending)
        except Exception as exc:  # best effort: a lost flush must break neither a request nor the shutdown
            logger.warning("request counts not written yet (kept for the next flush): %s", type(exc).__name__)
            with self._lock:
                for key, n in pending.items():
                    self._pending[key] = self._pending.get(key, 0) + n

    def render(self, deployments_by_status: dict[str, int]) -> str:
        """Prometheus text exposition of durable counters plus current deployment counts."""
        self.flush()
        lines = [
            "# HELP visgate_deployments Deployments by status.",
            "# TYPE visgate_deployments gauge",
        ]
        lines += [
            f'visgate_deployments{{status="{status}"}} {n}' for status, n in sorted(deployments_by_status.items())
        ]
        lines += [
            "# HELP visgate_http_requests_total Intake API requests by route and status code.",
            "# TYPE visgate_http_requests_total counter",
        ]
        for key, n in sorted(self._store.request_counts().items()):
            route, _, code = key.partition("|")
            lines.append(f'visgate_http_requests_total{{route="{route}",code="{code}"}} {n}')
        return "\n".join(lines) + "\n"


# Every live instance flushes once more at interpreter exit (weakly held: a discarded instance is not kept alive).
_LIVE: weakref.WeakSet[RequestCounters] = weakref.WeakSet()


@atexit.register
def flush_all() -> None:
    """Flush every live instance: at interpreter exit, and in tests before the emulators stop."""
    for counters in list(_LIVE):
        counters.flush()

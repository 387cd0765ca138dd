"""Request counters that survive instances: counted in memory, folded into a Firestore shard per instance."""

from __future__ import annotations

import threading
import time
import uuid

from shared.store import DeploymentStore

FLUSH_INTERVAL_S = 5.0


class RequestCounters:
    def __init__(self, store: DeploymentStore, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self._store = store
        self._instance = f"i_{uuid.uuid4().hex}"
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}
        self._interval = flush_interval_s
        self._last_flush = time.monotonic()

    def record(self, route: str, code: int) -> None:
        """Count one request; flush when the interval has passed (in the request's thread: no background CPU)."""
        key = f"{route}|{code}"
        with self._lock:
            self._pending[key] = self._pending.get(key, 0) + 1
            due = time.monotonic() - self._last_flush >= self._interval
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._last_flush = time.monotonic()
        self._store.add_request_counts(self._instance, pending)

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

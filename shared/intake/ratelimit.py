"""Per-tenant rate limit that holds across instances: a Firestore counter per tenant per minute.

Every authenticated request counts, refused ones too. A POST reads the window's count first (a full window refuses it
before anything is written) and counts inside its one batched commit, so the busiest route costs one Firestore
commit, not two (docs/decisions/2026-11-rate-limit-counting.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.errors import ApiError
from shared.store import DeploymentStore

WINDOW_S = 60


@dataclass(frozen=True)
class RateWindow:
    """The tenant's current one-minute window."""

    key: str
    expires_at: datetime
    limit: int
    retry_after_s: int

    def enforce(self, count: int) -> None:
        """429 with Retry-After once ``count`` (this request included) is over the limit."""
        if count > self.limit:
            raise ApiError(
                429,
                "rate_limited",
                f"more than {self.limit} requests in a minute; retry after {self.retry_after_s} s",
                details={"limit_per_minute": self.limit},
                headers={"Retry-After": str(self.retry_after_s)},
            )


def current_window(tenant: str, limit_per_minute: int, now: float | None = None) -> RateWindow:
    current = time.time() if now is None else now
    window = int(current // WINDOW_S)
    # The document expires with the window (a Firestore TTL policy on expires_at removes old windows).
    expires_at = datetime.fromtimestamp((window + 2) * WINDOW_S, UTC) + timedelta(minutes=5)
    retry_after = max(1, int((window + 1) * WINDOW_S - current) + 1)
    return RateWindow(f"{tenant}:{window}", expires_at, limit_per_minute, retry_after)


def count_request(store: DeploymentStore, window: RateWindow) -> None:
    """Count one request on its own (routes that write nothing else)."""
    window.enforce(store.increment_window(window.key, window.expires_at))


def check_rate_limit(store: DeploymentStore, tenant: str, limit_per_minute: int, now: float | None = None) -> None:
    """Count this request in the tenant's current window; 429 with Retry-After once over the limit."""
    count_request(store, current_window(tenant, limit_per_minute, now))

"""Per-tenant rate limit that holds across instances: a Firestore counter per tenant per minute."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from shared.errors import ApiError
from shared.store import DeploymentStore

WINDOW_S = 60


def check_rate_limit(store: DeploymentStore, tenant: str, limit_per_minute: int, now: float | None = None) -> None:
    """Count this request in the tenant's current window; 429 with Retry-After once over the limit."""
    current = time.time() if now is None else now
    window = int(current // WINDOW_S)
    # The document expires with the window (a Firestore TTL policy on expires_at removes old windows).
    expires_at = datetime.fromtimestamp((window + 2) * WINDOW_S, UTC) + timedelta(minutes=5)
    count = store.increment_window(f"{tenant}:{window}", expires_at)
    if count > limit_per_minute:
        retry_after = max(1, int((window + 1) * WINDOW_S - current) + 1)
        raise ApiError(
            429,
            "rate_limited",
            f"more than {limit_per_minute} requests in a minute; retry after {retry_after} s",
            details={"limit_per_minute": limit_per_minute},
            headers={"Retry-After": str(retry_after)},
        )

"""Error types. Only entry adapters map them to transport outcomes.

- :class:`ApiError` → the one HTTP error shape ``{"error": {"code", "message", "details"?, "request_id"}}``.
- :class:`RetryableError` → raise from the handler (HTTP 500) so Pub/Sub / Cloud Tasks redeliver.
- :class:`PermanentError` → mark the deployment failed with ``reason`` and acknowledge.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A client-facing error with a stable code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self, request_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "request_id": request_id}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class RetryableError(Exception):
    """A transient failure: the delivery must be retried (the handler answers 500)."""


class PermanentError(Exception):
    """A failure that no retry can fix; the deployment fails with ``reason``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class IllegalTransitionError(Exception):
    """The state machine refuses the requested status change."""

    log_safe = True  # the two statuses only (shared.logging writes other exceptions as their type)

    def __init__(self, current: str, requested: str) -> None:
        super().__init__(f"cannot move a deployment from {current} to {requested}")
        self.current = current
        self.requested = requested


class DeploymentNotFoundError(Exception):
    """No deployment document with that id."""

"""How Runpod's answers map onto our retry semantics.

REST v2 answers errors as RFC 9457 problem+json (``title``, ``status``, ``detail``, ``errors[]``). They are told
apart by HTTP status and structure only, never by the text of a message (Runpod words them as it likes):

- 401/403: the user's key is refused (permanent, ``auth_failed``);
- 404: the resource is gone (for teardown: done; anywhere else ``runpod_resource_missing``);
- 400/422: Runpod refused what we sent, a bug on our side that no retry fixes (``internal``; ``errors[]`` logged);
- 429: rate limited, retry after the ``RateLimit`` header's reset; 5xx and transport failures: retry.
"""

from __future__ import annotations

from shared.errors import PermanentError, RetryableError
from shared.lifecycle import FailureReason


class RunpodAuthError(PermanentError):
    """The API key was refused."""

    def __init__(self, message: str = "Runpod refused the API key") -> None:
        super().__init__(FailureReason.AUTH_FAILED.value, message)


class RunpodRejectedError(PermanentError):
    """Runpod refused a request that no retry will change (a bug on our side, or a config it will not take)."""

    def __init__(self, message: str, errors: tuple[str, ...] = ()) -> None:
        super().__init__(FailureReason.INTERNAL.value, message)
        self.errors = errors


class RunpodUnavailableError(RetryableError):
    """Rate limited, a server error or a transport failure: try again later (``retry_after_s`` when Runpod said)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RunpodTimeoutError(RunpodUnavailableError):
    """Runpod took the request but did not answer in time (a read timeout): retryable, and told apart so an API can
    answer 504 rather than 502."""


class RunpodNotFoundError(PermanentError):
    """The resource does not exist: for teardown it is gone already; anywhere else it was removed on Runpod behind
    our back (a deleted endpoint), which no retry brings back."""

    def __init__(self, message: str) -> None:
        super().__init__(
            FailureReason.RUNPOD_RESOURCE_MISSING.value, f"{message} (was it deleted on Runpod outside this service?)"
        )


def rate_limit_reset_s(rate_limit: str | None, retry_after: str | None) -> float | None:
    """Seconds until the exhausted window resets, from ``RateLimit`` (``"minute";r=0;t=12, "hour";r=5;t=1812``)
    or else ``Retry-After``; None when neither says."""
    resets = []
    for member in (rate_limit or "").split(","):
        params = dict(part.strip().partition("=")[::2] for part in member.split(";")[1:])
        if params.get("r") == "0" and params.get("t", "").isdigit():
            resets.append(float(params["t"]))
    if resets:
        return max(resets)
    if retry_after and retry_after.strip().isdigit():
        return float(retry_after.strip())
    return None

"""How Runpod failures map onto our retry semantics.

HTTP 401/403 mean the user's key is wrong (permanent, ``auth_failed``); 429, 5xx and transport errors are transient.
Runpod answers most refusals as GraphQL errors with HTTP 200 and a message only, so those are classified by message.
"""

from __future__ import annotations

from shared.errors import PermanentError, RetryableError
from shared.lifecycle import FailureReason

_MAX_MESSAGE = 200


class RunpodAuthError(PermanentError):
    """The API key was refused."""

    def __init__(self, message: str = "Runpod refused the API key") -> None:
        super().__init__(FailureReason.AUTH_FAILED.value, message)


class RunpodQuotaError(PermanentError):
    """The account may not create more (endpoints, workers, balance)."""

    def __init__(self, message: str) -> None:
        super().__init__(FailureReason.QUOTA_EXCEEDED.value, message)


class RunpodRejectedError(PermanentError):
    """Runpod refused a request that no retry will change (a bug on our side, or a config it will not take)."""

    def __init__(self, message: str) -> None:
        super().__init__(FailureReason.INTERNAL.value, message)


class RunpodUnavailableError(RetryableError):
    """Rate limited, a server error or a transport failure: try again later."""


class RunpodNameTakenError(Exception):
    """A template or endpoint of that name exists already (an earlier attempt created it: adopt it)."""


class RunpodNotFoundError(PermanentError):
    """The resource does not exist: for teardown it is gone already; anywhere else it was removed on Runpod behind
    our back (a deleted endpoint or template), which no retry brings back."""

    def __init__(self, message: str) -> None:
        super().__init__(
            FailureReason.RUNPOD_RESOURCE_MISSING.value, f"{message} (was it deleted on Runpod outside this service?)"
        )


_NAME_TAKEN = ("must be unique", "already exists", "already in use", "name is taken", "name taken")
_NOT_FOUND = ("not found", "does not exist", "no such")
_QUOTA = ("quota", "maximum number", "max workers", "balance", "limit reached", "limit exceeded")
_AUTH = ("unauthorized", "unauthenticated", "forbidden", "permission denied", "invalid api key")
# Runpod refuses deleteEndpoint until a 0/0 scale-down took effect, and deleteTemplate while an endpoint uses it;
# both settle by themselves.
_SETTLING = ("while it has workers", "has running workers", "workersmin and workersmax to 0", "in use by")


def classify_graphql_error(message: str) -> Exception:
    """The exception a GraphQL error message stands for."""
    text = message.lower()
    short = message[:_MAX_MESSAGE]
    for needles, error in (
        (_AUTH, lambda: RunpodAuthError(f"Runpod refused the API key: {short}")),
        (_SETTLING, lambda: RunpodUnavailableError(f"Runpod is still scaling down: {short}")),
        (_NAME_TAKEN, lambda: RunpodNameTakenError(short)),
        (_NOT_FOUND, lambda: RunpodNotFoundError(short)),
        (_QUOTA, lambda: RunpodQuotaError(f"Runpod quota: {short}")),
    ):
        if any(needle in text for needle in needles):
            return error()
    return RunpodRejectedError(f"Runpod refused the request: {short}")

"""The client's exceptions: one class per error code of the API, and the API's error shape parsed in one place.

Every error answer of the API is ``{"error": {"code", "message", "details"?, "request_id"}}``;
:func:`error_from_response` turns one into the class registered for its code (:class:`ApiError` itself for a code
this client does not know yet, so a newer server never breaks an older client).
"""

from __future__ import annotations

from typing import Any, ClassVar

import requests


class VisgateError(Exception):
    """Base class of everything this package raises."""


class ApiError(VisgateError):
    """An error answer of the Visgate API: HTTP ``status``, stable ``code``, ``message``, ``request_id``."""

    code: str = "unknown"  # each subclass names its own; an instance may carry an unregistered one
    _by_code: ClassVar[dict[str, type[ApiError]]] = {}

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        request_id: str | None = None,
        details: Any = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s  # the Retry-After header (429, 503), when sent
        self.message = message
        self.request_id = request_id
        self.details = details
        if code is not None:
            self.code = code  # an unregistered code keeps its own name on the base class

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            ApiError._by_code[cls.code] = cls

    @classmethod
    def for_code(cls, code: str) -> type[ApiError]:
        """The class registered for ``code`` (``ApiError`` for an unknown one)."""
        return cls._by_code.get(code, ApiError)

    def __str__(self) -> str:
        rid = f" (request_id {self.request_id})" if self.request_id else ""
        return f"{self.code}: {self.message}{rid}"


# --- one class per error code (shared/intake, shared/http, the functions host) ------------------------------------


class InvalidRequestError(ApiError):
    """400: the body is refused; ``details`` lists each field and its problem."""

    code = "invalid_request"


class InvalidJsonError(ApiError):
    """400: the body is not valid JSON."""

    code = "invalid_json"


class InvalidIdempotencyKeyError(ApiError):
    """400: the Idempotency-Key is not 1-255 printable characters."""

    code = "invalid_idempotency_key"


class InvalidStatusError(ApiError):
    """400: an unknown ``status`` filter."""

    code = "invalid_status"


class InvalidLimitError(ApiError):
    """400: ``limit`` out of range."""

    code = "invalid_limit"


class InvalidPageTokenError(ApiError):
    """400: a ``page_token`` this API did not issue."""

    code = "invalid_page_token"


class InvalidWaitError(ApiError):
    """400: runsync's ``wait`` is not 1000..300000 ms."""

    code = "invalid_wait"


class InvalidPeriodError(ApiError):
    """400: usage's ``from``/``to`` are not dates (YYYY-MM-DD), ``from`` is after ``to``, or the period is over 366
    days."""

    code = "invalid_period"


class UnauthenticatedError(ApiError):
    """401: no key was sent."""

    code = "unauthenticated"


class InvalidApiKeyError(ApiError):
    """401: Runpod refuses the key; or an invoke key (``vdk_...``) that is revoked, or used on a route it does not
    open (it opens only the run, runsync, jobs and get routes of its own deployment)."""

    code = "invalid_api_key"


class NotFoundError(ApiError):
    """404: no such route."""

    code = "not_found"


class DeploymentNotFoundError(ApiError):
    """404: no deployment with that id for this key (another tenant's deployment is not revealed)."""

    code = "deployment_not_found"


class JobNotFoundError(ApiError):
    """404: no job with that id on this deployment (job records expire after ``JOB_RECORD_TTL_DAYS``)."""

    code = "job_not_found"


class InvokeKeyNotFoundError(ApiError):
    """404: no invoke key with that id on this deployment."""

    code = "invoke_key_not_found"


class MethodNotAllowedError(ApiError):
    """405: the route does not take this method."""

    code = "method_not_allowed"


class IdempotencyKeyReusedError(ApiError):
    """409: the Idempotency-Key was used before with a different body."""

    code = "idempotency_key_reused"


class NotReadyError(ApiError):
    """409: a job, or an invoke key, was asked of a deployment that is not ``ready`` (``details["status"]`` says
    what it is)."""

    code = "deployment_not_ready"


class InvalidStateError(ApiError):
    """409: stop asked of a deployment that is not ``ready``, or start of one that is not ``stopped``."""

    code = "invalid_state"


class TooManyInvokeKeysError(ApiError):
    """409: the deployment has as many invoke keys as it may have: revoke one first."""

    code = "too_many_invoke_keys"


class TenantLimitReachedError(ApiError):
    """409: the create would pass one of the account's caps (``details``: ``limit``, ``current`` and ``counter``,
    ``live_deployments`` or ``workers_min``): delete a deployment, or lower ``workers_min``, first."""

    code = "tenant_limit_reached"


class BudgetExhaustedError(ApiError):
    """409: the deployment's budget (``max_cost_usd``) is used up: raise or clear it before starting it."""

    code = "budget_exhausted"


class TooManyRefusedKeysError(ApiError):
    """429: this address sent too many refused API keys in a minute."""

    code = "too_many_refused_keys"


class PayloadTooLargeError(ApiError):
    """413: the body is larger than the API reads."""

    code = "payload_too_large"


class UnsupportedMediaTypeError(ApiError):
    """415: the body is not ``application/json``."""

    code = "unsupported_media_type"


class RateLimitedError(ApiError):
    """429: too many requests in a minute; ``retry_after_s`` says when to try again."""

    code = "rate_limited"


class InternalError(ApiError):
    """500: the API failed; the ``request_id`` finds it in the logs."""

    code = "internal"


class UnavailableError(ApiError):
    """503: a dependency of the API is unavailable for now."""

    code = "unavailable"


class RunpodError(ApiError):
    """502/504: Runpod failed the API's call for this request (the request and your auth were fine); the subclass
    says how."""


class RunpodUnreachableError(RunpodError):
    """502: Runpod is unreachable or unavailable now; ``retry_after_s`` says when to try again."""

    code = "runpod_unreachable"


class RunpodAuthFailedError(RunpodError):
    """502: Runpod refused the Runpod API key the deployment was created with."""

    code = "runpod_auth_failed"


class RunpodTimeoutError(RunpodError):
    """504: Runpod did not answer in time."""

    code = "runpod_timeout"


class RunpodEndpointMissingError(RunpodError):
    """502: Runpod no longer knows the deployment's endpoint or job."""

    code = "runpod_endpoint_missing"


class RunpodRejectedError(RunpodError):
    """502: Runpod refused the request."""

    code = "runpod_rejected"


def error_from_response(response: requests.Response) -> ApiError:
    """The typed error of an error answer; a body without the error shape still gives an :class:`ApiError`."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    request_id = response.headers.get("X-Request-Id")
    retry_after = response.headers.get("Retry-After", "")
    retry_after_s = float(retry_after) if retry_after.isdigit() else None
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        text = response.text.strip().replace("\n", " ")[:300] or response.reason or "no body"
        message = f"HTTP {response.status_code}: {text}"
        return ApiError(response.status_code, message, code="http_error", request_id=request_id)
    code = error["code"]
    cls = ApiError.for_code(code)
    return cls(
        response.status_code,
        str(error.get("message", "")),
        code=None if cls is not ApiError else code,
        request_id=error.get("request_id") or request_id,
        details=error.get("details"),
        retry_after_s=retry_after_s,
    )


# --- what a deployment or a job ends with -------------------------------------------------------------------------


class DeploymentFailedError(VisgateError):
    """The deployment ended ``failed``: ``reason`` is its failure code (``model_not_found``, ``no_capacity``...)."""

    def __init__(self, deployment_id: str, reason: str, message: str, view: dict[str, Any] | None = None) -> None:
        super().__init__(f"deployment {deployment_id} failed: {reason}: {message}")
        self.deployment_id = deployment_id
        self.reason = reason
        self.message = message
        self.view = view or {}


class DeploymentDeletedError(VisgateError):
    """The deployment was deleted (or is being deleted) while something waited for it to become ready."""

    def __init__(self, deployment_id: str, status: str) -> None:
        super().__init__(f"deployment {deployment_id} is {status}")
        self.deployment_id = deployment_id
        self.status = status


class WaitTimeoutError(VisgateError, TimeoutError):
    """A wait ran out of time; ``last_status`` is what the deployment or job was last seen as."""

    def __init__(self, what: str, timeout_s: float, last_status: str | None) -> None:
        super().__init__(f"{what} did not finish within {timeout_s:g} s (last status: {last_status})")
        self.last_status = last_status


class JobFailedError(VisgateError):
    """An inference job ended other than ``COMPLETED``: ``status`` (FAILED, CANCELLED, TIMED_OUT) and ``error``."""

    def __init__(self, job_id: str, status: str, error: Any) -> None:
        super().__init__(f"job {job_id} ended {status}: {error}")
        self.job_id = job_id
        self.status = status
        self.error = error


class JobOutputUnavailableError(VisgateError):
    """A job completed, but its inline output (base64 images) is gone: the API never stores it and asks Runpod for
    it, which keeps a ``/run`` result for 30 minutes after the job ends (a runsync one for a minute). ``view`` is the
    job as the API shows it now; runsync, a ``webhook_url`` or an output bucket (``output_s3_url``) never lose an
    output."""

    def __init__(self, job_id: str, view: dict[str, Any]) -> None:
        super().__init__(f"job {job_id} completed, but Runpod no longer keeps its output")
        self.job_id = job_id
        self.view = view


class WebhookVerificationError(VisgateError):
    """A webhook delivery whose signature, timestamp or headers do not verify."""

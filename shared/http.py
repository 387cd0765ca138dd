"""HTTP plumbing shared by the HTTP functions: request ids, JSON bodies, the one error shape."""

from __future__ import annotations

import json
import logging
import traceback
import uuid
from typing import Any, TypeVar

from botocore.exceptions import ClientError, ConnectionClosedError, ConnectTimeoutError, EndpointConnectionError
from botocore.exceptions import ReadTimeoutError as S3ReadTimeoutError
from flask import Request, Response
from flask import request as flask_request
from google.api_core import exceptions as gexc
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import MethodNotAllowed, NotFound

from shared.errors import ApiError, RetryableError
from shared.messages import Message

logger = logging.getLogger(__name__)
M = TypeVar("M", bound=Message)

# Failures that mean "try again shortly": Google API errors (the set the client libraries themselves retry, and
# more), S3 transport errors, and our own RetryableError (Runpod unavailable, say).
TRANSIENT_ERRORS = (
    RetryableError,
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.TooManyRequests,
    gexc.Aborted,
    gexc.RetryError,
    EndpointConnectionError,
    ConnectTimeoutError,
    ConnectionClosedError,
    S3ReadTimeoutError,
)
_TRANSIENT_S3_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling"})


def request_id(request: Request) -> str:
    """The Cloud Trace id when the platform sent one, else a fresh id."""
    trace = request.headers.get("X-Cloud-Trace-Context", "")
    return trace.split("/", 1)[0] if trace else uuid.uuid4().hex


def json_response(
    payload: BaseModel | dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    return Response(body, status=status, mimetype="application/json", headers=headers)


def error_response(error: ApiError, rid: str) -> Response:
    headers = {**error.headers, "X-Request-Id": rid}
    return Response(json.dumps(error.body(rid)), status=error.status, mimetype="application/json", headers=headers)


def answer_unrouted_in_error_shape() -> None:
    """Make the functions framework answer paths its own router refuses (a control character such as ``%0A``
    matches no rule) in the one error shape instead of an HTML page. Call it from a function's module: the
    framework points ``errorhandler`` at the app it is loading that module into."""
    import functions_framework  # the framework only exists in the functions' runtime, not in the worker

    def not_found(_exc: Exception) -> Response:
        return error_response(ApiError(404, "not_found", "no such route"), request_id(flask_request))

    def not_allowed(_exc: Exception) -> Response:
        return error_response(ApiError(405, "method_not_allowed", "method not allowed here"), request_id(flask_request))

    functions_framework.errorhandler(NotFound)(not_found)
    functions_framework.errorhandler(MethodNotAllowed)(not_allowed)


def read_json_body(request: Request, max_bytes: int) -> bytes:
    """The raw JSON body, refusing non-JSON (415) and oversized (413) bodies before reading them whole."""
    content_type = (request.mimetype or "").lower()
    if content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)")
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, "payload_too_large", f"the body must be at most {max_bytes} bytes")
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError(413, "payload_too_large", f"the body must be at most {max_bytes} bytes")
    return raw


def validation_error(exc: ValidationError) -> ApiError:
    """A pydantic error as a 400 listing each refused field (never echoing the input: it may hold secrets)."""
    details = [
        {"field": ".".join(str(part) for part in err["loc"]) or "body", "problem": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    if any(err["type"] == "json_invalid" for err in exc.errors()):
        return ApiError(400, "invalid_json", "the body is not valid JSON", details)
    return ApiError(400, "invalid_request", "the request body is invalid", details)


def is_transient(exc: BaseException) -> bool:
    """Whether a retry may fix ``exc`` (see TRANSIENT_ERRORS; an S3 error answer counts when it is a 5xx or
    a throttle)."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or exc.response.get("Error", {}).get("Code") in _TRANSIENT_S3_CODES
    return isinstance(exc, TRANSIENT_ERRORS)


def failure_error(exc: Exception, where: str) -> ApiError:
    """The answer to an exception a handler did not expect: 503 when a retry may fix it, else 500; logged.

    The 500 is logged with its type and stack only: an exception's text may quote request data or a secret.
    """
    if is_transient(exc):
        logger.warning("dependency unavailable in %s: %s", where, type(exc).__name__)
        return ApiError(503, "unavailable", "a dependency is unavailable; retry shortly", headers={"Retry-After": "2"})
    log_unexpected(exc, where)
    return ApiError(500, "internal", "an internal error; it has been logged")


def log_unexpected(exc: BaseException, where: str) -> None:
    """Log a bug with its type and stack, never its text (it may quote a token or a key)."""
    stack = "".join(traceback.format_tb(exc.__traceback__))
    logger.error("unhandled %s in %s\n%s", type(exc).__name__, where, stack)

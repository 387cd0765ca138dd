"""HTTP plumbing shared by the HTTP functions: request ids, JSON bodies, the one error shape."""

from __future__ import annotations

import json
import uuid
from typing import Any

from flask import Request, Response
from pydantic import BaseModel, ValidationError

from shared.errors import ApiError


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

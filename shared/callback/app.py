"""The callback function's HTTP API: routing of a worker's signed phase reports (``POST
/v1/deployments/<id>/phase``), shared-cache grant requests (``POST /v1/deployments/<id>/cache-grant``) and Runpod's
calls on a job's end (``POST /v1/deployments/<id>/job-ended?token=``), and the mapping of outcomes to responses in
the one error shape."""

from __future__ import annotations

import re

from flask import Request, Response, jsonify

from shared import logging as slog
from shared.callback.steps import GrantAnswer, Outcome, SignedReport, grant_cache, nudge_job_check, receive_report
from shared.deployments.deps import StepDeps
from shared.deployments.model_cache import SharedModelCache
from shared.errors import ApiError
from shared.http import error_response, failure_error, request_id

# The most a caller may send: a phase report or a grant request is a few hundred bytes. Checked before the body is
# read, so an unauthenticated caller cannot make us read megabytes.
MAX_BODY_BYTES = 64 * 1024
_PATH = re.compile(r"^/v1/deployments/(?P<id>[^/]+)/(?P<route>phase|cache-grant|job-ended)/?$")
_REFUSALS = {
    Outcome.UNAUTHORIZED: (401, "invalid_signature", "the request is not signed for this deployment"),
    Outcome.REPLAYED: (409, "report_replayed", "a report with this webhook-id was taken already"),
    Outcome.MALFORMED: (400, "invalid_report", "the body is not a valid phase report or grant request"),
    Outcome.FORBIDDEN: (403, "cache_not_granted", "the deployment may not read the shared cache"),
    Outcome.NOT_CACHED: (404, "not_cached", "the shared cache does not hold this model"),
}


class CallbackApi:
    def __init__(self, deps: StepDeps, shared_cache: SharedModelCache | None) -> None:
        self._deps = deps
        self._shared_cache = shared_cache

    def __call__(self, request: Request) -> Response:
        rid = request_id(request)
        match = _PATH.fullmatch(request.path)
        if match is None or request.method != "POST":
            not_found = ApiError(404, "not_found", "POST /v1/deployments/<id>/phase, /cache-grant or /job-ended")
            return error_response(not_found, rid)
        if match["route"] == "job-ended":
            return self._job_ended(request, match["id"], rid)
        body = capped_body(request)
        if body is None:
            too_large = ApiError(413, "payload_too_large", f"the body must be at most {MAX_BODY_BYTES} bytes")
            return error_response(too_large, rid)
        signed = SignedReport(match["id"], dict(request.headers), body)
        with slog.bind(deployment_id=match["id"], execution_id=request.headers.get("webhook-id"), step="callback"):
            try:
                if match["route"] == "phase":
                    answer = GrantAnswer(receive_report(signed, self._deps))
                else:
                    answer = grant_cache(signed, self._deps, self._shared_cache)
            except Exception as exc:  # Firestore, S3 or Runpod failed: the one error shape, logged with the id
                return error_response(failure_error(exc, f"callback {match['route']}"), rid)
        if answer.grant is not None:
            return jsonify(answer.grant)
        return self._refusal(answer, rid)

    def _job_ended(self, request: Request, deployment_id: str, rid: str) -> Response:
        """Runpod's call: authenticated by its URL's token before its body is read."""
        with slog.bind(deployment_id=deployment_id, step="callback"):
            try:
                token = request.args.get("token", "")
                outcome = nudge_job_check(deployment_id, token, lambda: capped_body(request), self._deps)
            except Exception as exc:
                return error_response(failure_error(exc, "callback job-ended"), rid)
        if outcome is Outcome.ACCEPTED:
            return Response(status=200)  # Runpod calls again on anything but 200
        return self._refusal(GrantAnswer(outcome), rid)

    @staticmethod
    def _refusal(answer: GrantAnswer, rid: str) -> Response:
        if answer.outcome not in _REFUSALS:
            return Response(status=204)
        status, code, message = _REFUSALS[answer.outcome]
        return error_response(ApiError(status, code, answer.reason or message), rid)


def capped_body(request: Request, max_bytes: int = MAX_BODY_BYTES) -> bytes | None:
    """The body, or None when it is over ``max_bytes``: decided from Content-Length before reading, else by reading
    at most one byte more than the cap."""
    if request.content_length is not None and request.content_length > max_bytes:
        return None
    raw = request.stream.read(max_bytes + 1)
    return None if len(raw) > max_bytes else raw

"""callback (HTTP, internal): a deployment's worker POSTs signed phase reports to ``/v1/deployments/<id>/phase``
and shared-cache grant requests to ``/v1/deployments/<id>/cache-grant``."""

import re

import functions_framework
from flask import Request, Response, jsonify

from shared import logging as slog
from shared.config import get_settings
from shared.errors import ApiError
from shared.http import error_response, failure_error, request_id
from shared.model_cache import SharedModelCache
from shared.steps.callback import GrantAnswer, Outcome, SignedReport, grant_cache, receive_report
from shared.wiring import step_deps

slog.configure()
_deps = step_deps(get_settings())
_shared_cache = SharedModelCache.from_settings(get_settings())
_PATH = re.compile(r"^/v1/deployments/(?P<id>[^/]+)/(?P<route>phase|cache-grant)/?$")
_REFUSALS = {
    Outcome.UNAUTHORIZED: (401, "invalid_signature", "the request is not signed for this deployment"),
    Outcome.MALFORMED: (400, "invalid_report", "the body is not a valid phase report or grant request"),
    Outcome.FORBIDDEN: (403, "cache_not_granted", "the deployment may not read the shared cache"),
    Outcome.NOT_CACHED: (404, "not_cached", "the shared cache does not hold this model"),
}


@functions_framework.http
def callback(request: Request) -> Response:
    match = _PATH.match(request.path)
    if match is None or request.method != "POST":
        not_found = ApiError(404, "not_found", "POST /v1/deployments/<id>/phase or /v1/deployments/<id>/cache-grant")
        return error_response(not_found, request_id(request))
    signed = SignedReport(match["id"], dict(request.headers), request.get_data())
    with slog.bind(deployment_id=match["id"], execution_id=request.headers.get("webhook-id"), step="callback"):
        try:
            if match["route"] == "phase":
                answer = GrantAnswer(receive_report(signed, _deps))
            else:
                answer = grant_cache(signed, _deps, _shared_cache)
        except Exception as exc:  # Firestore, S3 or Runpod failed: the one error shape, logged with the id
            return error_response(failure_error(exc, f"callback {match['route']}"), request_id(request))
    if answer.grant is not None:
        return jsonify(answer.grant)
    if answer.outcome not in _REFUSALS:
        return Response(status=204)
    status, code, message = _REFUSALS[answer.outcome]
    return error_response(ApiError(status, code, answer.reason or message), request_id(request))

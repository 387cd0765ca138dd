"""callback (HTTP, internal): signed phase reports from a deployment's worker at ``/v1/deployments/<id>/phase``."""

import re

import functions_framework
from flask import Request, Response

from shared import logging as slog
from shared.config import get_settings
from shared.errors import ApiError
from shared.http import error_response, request_id
from shared.steps.callback import Outcome, SignedReport, receive_report
from shared.wiring import step_deps

slog.configure()
_deps = step_deps(get_settings())
_PATH = re.compile(r"^/v1/deployments/(?P<id>[^/]+)/phase/?$")
_REFUSALS = {
    Outcome.UNAUTHORIZED: ApiError(401, "invalid_signature", "the report is not signed for this deployment"),
    Outcome.MALFORMED: ApiError(400, "invalid_report", "the report is not a valid phase report"),
}


@functions_framework.http
def callback(request: Request) -> Response:
    match = _PATH.match(request.path)
    if match is None or request.method != "POST":
        return error_response(ApiError(404, "not_found", "POST /v1/deployments/<id>/phase"), request_id(request))
    with slog.bind(deployment_id=match["id"], execution_id=request.headers.get("webhook-id"), step="callback"):
        outcome = receive_report(SignedReport(match["id"], dict(request.headers), request.get_data()), _deps)
    refusal = _REFUSALS.get(outcome)
    return Response(status=204) if refusal is None else error_response(refusal, request_id(request))

"""callback (HTTP, internal): signed phase reports from a deployment's worker at ``/v1/deployments/<id>/phase``."""

import re

import functions_framework
from flask import Request, Response

from shared import logging as slog
from shared.config import get_settings
from shared.steps.callback import Outcome, SignedReport, receive_report
from shared.wiring import step_deps

slog.configure()
_deps = step_deps(get_settings())
_PATH = re.compile(r"^/v1/deployments/(?P<id>[^/]+)/phase/?$")
_STATUS = {Outcome.ACCEPTED: 204, Outcome.UNAUTHORIZED: 401, Outcome.MALFORMED: 400}


@functions_framework.http
def callback(request: Request) -> Response:
    match = _PATH.match(request.path)
    if match is None or request.method != "POST":
        return Response(status=404)
    with slog.bind(deployment_id=match["id"], execution_id=request.headers.get("webhook-id"), step="callback"):
        outcome = receive_report(SignedReport(match["id"], dict(request.headers), request.get_data()), _deps)
    return Response(status=_STATUS[outcome])

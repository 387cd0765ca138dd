"""readiness (Cloud Tasks ``readiness``): the watchdog of a silent worker; reschedules itself with backoff."""

import functions_framework
from flask import Request, Response

from shared import logging as slog
from shared.config import ProvisioningSettings, get_settings
from shared.http import answer_unrouted_in_error_shape
from shared.messages import ReadinessCheck
from shared.steps.readiness import check_readiness
from shared.steps.runner import handle_task
from shared.wiring import step_deps

slog.configure()
answer_unrouted_in_error_shape()
_deps = step_deps(get_settings(ProvisioningSettings))


@functions_framework.http
def readiness(request: Request) -> Response:
    handle_task(request.get_data(), dict(request.headers), ReadinessCheck, _deps, check_readiness)
    return Response(status=204)

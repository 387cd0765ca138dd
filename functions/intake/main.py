"""intake: the public REST API (HTTP). Routing and steps live in shared.intake; its clients are built by
shared.wiring.intake."""

import functions_framework
from flask import Request, Response

from shared import logging as slog
from shared.config import IntakeSettings, get_settings
from shared.http import answer_unrouted_in_error_shape
from shared.wiring.intake import intake_api

slog.configure()
answer_unrouted_in_error_shape()
api = intake_api(get_settings(IntakeSettings))


@functions_framework.http
def intake(request: Request) -> Response:
    return api(request)

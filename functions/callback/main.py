"""callback (HTTP, internal): a deployment's worker POSTs signed phase reports and shared-cache grant requests.
Routing lives in shared.callback.app."""

import functions_framework
from flask import Request, Response

from shared import logging as slog
from shared.config import CallbackSettings, get_settings
from shared.http import answer_unrouted_in_error_shape
from shared.wiring.callback import callback_app

slog.configure()
answer_unrouted_in_error_shape()
api = callback_app(get_settings(CallbackSettings))


@functions_framework.http
def callback(request: Request) -> Response:
    return api(request)

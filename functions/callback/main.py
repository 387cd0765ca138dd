"""callback (HTTP, internal): a deployment's worker POSTs signed phase reports and shared-cache grant requests.
Routing lives in shared.callback.app."""

import functions_framework
from flask import Request, Response

from shared import logging as slog
from shared.callback.app import CallbackApi
from shared.config import CallbackSettings, get_settings
from shared.deployments.model_cache import SharedModelCache
from shared.http import answer_unrouted_in_error_shape
from shared.wiring import step_deps

slog.configure()
answer_unrouted_in_error_shape()
_settings = get_settings(CallbackSettings)
api = CallbackApi(step_deps(_settings), SharedModelCache.from_settings(_settings))


@functions_framework.http
def callback(request: Request) -> Response:
    return api(request)

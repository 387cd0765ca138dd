"""intake: the public REST API (HTTP). Routing and steps live in shared.intake."""

import functions_framework
from flask import Request, Response

from shared import logging as slog
from shared.config import IntakeSettings, get_settings
from shared.http import answer_unrouted_in_error_shape
from shared.intake.app import IntakeApi
from shared.intake.keys import KeyVerifier
from shared.intake.metrics import RequestCounters
from shared.intake.notify import NotifyRoutes
from shared.intake.steps import IntakeDeps
from shared.wiring import core

slog.configure()
answer_unrouted_in_error_shape()
_settings = get_settings(IntakeSettings)
_db, _store, _publisher, _transitions, _sealer = core(_settings)
_keys = KeyVerifier.from_settings(_store, _settings)
_intake_deps = IntakeDeps(_settings, _store, _transitions, _publisher, _sealer, _keys)
api = IntakeApi(_intake_deps, _db, RequestCounters(_store), notify=NotifyRoutes(_intake_deps, _db))


@functions_framework.http
def intake(request: Request) -> Response:
    return api(request)

"""intake: the public REST API (HTTP). Routing and steps live in shared.intake."""

import functions_framework
from flask import Request, Response

from shared import logging as slog
from shared.config import get_settings
from shared.http import answer_unrouted_in_error_shape
from shared.intake.app import IntakeApi
from shared.intake.keys import KeyVerifier
from shared.intake.metrics import RequestCounters
from shared.intake.steps import IntakeDeps
from shared.runpod.client import RunpodConnector
from shared.wiring import core

slog.configure()
answer_unrouted_in_error_shape()
_settings = get_settings()
_db, _store, _publisher, _transitions, _sealer = core(_settings)
_keys = KeyVerifier(
    _store,
    RunpodConnector(_settings.runpod_api_base_url, _settings.runpod_endpoint_base_url, _settings.runpod_timeout_s),
    verdict_ttl_s=_settings.key_verdict_ttl_s,
    refusal_ttl_s=_settings.key_refusal_ttl_s,
    refusals_per_address_per_minute=_settings.refused_keys_per_address_per_minute,
)
api = IntakeApi(IntakeDeps(_settings, _store, _transitions, _publisher, _sealer, _keys), _db, RequestCounters(_store))


@functions_framework.http
def intake(request: Request) -> Response:
    return api(request)

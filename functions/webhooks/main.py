"""webhooks (Pub/Sub ``deployment-events`` + Cloud Tasks ``webhook-delivery``): signed webhook deliveries."""

import functions_framework
from flask import Request, Response

from shared import logging as slog
from shared.config import BackgroundSettings, get_settings
from shared.wiring import webhook_entry

slog.configure()
_entry = webhook_entry(get_settings(BackgroundSettings))


@functions_framework.http
def webhooks(request: Request) -> Response:
    return _entry(request)

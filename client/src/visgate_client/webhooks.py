"""Verify the signed webhook deliveries of the API (Standard Webhooks: ``webhook-id``, ``webhook-timestamp``,
``webhook-signature`` headers; HMAC-SHA256 over ``id.timestamp.body``; deliveries older or newer than 5 minutes are
refused, so a captured delivery cannot be replayed later)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from standardwebhooks.webhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as _StandardError

from visgate_client.errors import WebhookVerificationError


def verify_webhook(headers: Mapping[str, str], body: bytes | str, secret: str | bytes) -> Any:
    """The delivery's JSON payload, once its signature verifies with ``secret`` (``whsec_...``).

    Pass the raw request body (not re-serialised JSON) and the request headers (any case). Raises
    :class:`~visgate_client.errors.WebhookVerificationError` for a missing header, a bad signature, a stale or
    future timestamp, or a malformed secret.
    """
    try:
        return Webhook(secret).verify(body, dict(headers))
    except _StandardError as exc:
        raise WebhookVerificationError(str(exc)) from exc
    except (ValueError, TypeError) as exc:  # a malformed secret or signature header (base64, "v1,<sig>")
        raise WebhookVerificationError(f"malformed webhook secret or signature: {exc}") from exc

"""Standard Webhooks signatures, shared by worker phase reports (callback) and user webhooks.

A secret is ``whsec_<base64 key>``. A message is signed as
``base64(HMAC-SHA256(key, f"{msg_id}.{timestamp}.{body}"))`` and sent in three headers:
``webhook-id``, ``webhook-timestamp`` (unix seconds) and ``webhook-signature`` (``v1,<sig>``; several
space-separated signatures are allowed so that secrets can rotate). Stdlib only: the worker image imports it too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_S = 300
HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"


class SignatureError(Exception):
    """The message is not signed with the expected secret, or is too old or too new to accept."""

    log_safe = True  # fixed texts only (shared.logging writes other exceptions as their type)


def new_secret() -> str:
    """A fresh random signing secret (32 bytes of key material)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("signing secret must start with 'whsec_'")
    return base64.b64decode(secret[len(SECRET_PREFIX) :])


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign_headers(secret: str, body: bytes, msg_id: str | None = None, now: float | None = None) -> dict[str, str]:
    """Headers that authenticate ``body``; ``msg_id`` defaults to a fresh id (it doubles as the dedupe key)."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time() if now is None else now)
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: signature(secret, msg_id, timestamp, body),
    }


def check_headers(headers: Mapping[str, str], tolerance_s: int = DEFAULT_TOLERANCE_S, now: float | None = None) -> None:
    """What can be checked without the secret: the three headers are there, the timestamp is an integer within the
    tolerance window and a ``v1,`` signature is offered. Lets a receiver refuse junk before it reads any secret.

    Raises:
        SignatureError: why the message cannot be genuine.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    if not lowered.get(HEADER_ID) or not lowered.get(HEADER_SIGNATURE):
        raise SignatureError("missing webhook signature headers")
    try:
        timestamp = int(lowered.get(HEADER_TIMESTAMP, ""))
    except ValueError as exc:
        raise SignatureError("webhook-timestamp is missing or not an integer") from exc
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError("webhook-timestamp is outside the accepted window")
    if not any(candidate.startswith("v1,") for candidate in lowered[HEADER_SIGNATURE].split()):
        raise SignatureError("no v1 signature offered")


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> str:
    """Check the signature headers of ``body``; return the message id or raise :class:`SignatureError`."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get(HEADER_ID, "")
    raw_timestamp = lowered.get(HEADER_TIMESTAMP, "")
    sent = lowered.get(HEADER_SIGNATURE, "")
    if not msg_id or not raw_timestamp or not sent:
        raise SignatureError("missing webhook signature headers")
    try:
        timestamp = int(raw_timestamp)
    except ValueError as exc:
        raise SignatureError("webhook-timestamp is not an integer") from exc
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError("webhook-timestamp is outside the accepted window")
    expected = signature(secret, msg_id, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in sent.split()):
        raise SignatureError("webhook signature does not match")
    return msg_id

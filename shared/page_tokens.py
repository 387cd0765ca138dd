"""The opaque cursor of a listing (``page_token``): what the last item of a page was, for ``start_after``.

A token is the URL-safe base64 (unpadded) of the JSON ``[created_at (ISO-8601, with offset), id]``. Clients send it
back as they got it; anything else is refused here, before any parsing could cost more than the token's size:
longer than :data:`MAX_PAGE_TOKEN_CHARS`, a character outside URL-safe base64, bytes that are no UTF-8 JSON, JSON
nested or shaped otherwise than a two-item list of strings, a time without an offset, or an id the listing's
pattern does not match (whole). Every refusal is :class:`InvalidPageTokenError`, which the API answers with 400
``invalid_page_token``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime

# Our tokens are at most ~240 characters (a 32-character time, an id of up to 128, JSON and base64 overhead).
MAX_PAGE_TOKEN_CHARS = 512
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")


class InvalidPageTokenError(ValueError):
    """A page token this API did not issue."""


def encode_page_token(created_at: datetime, last_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), last_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, id_pattern: str) -> tuple[datetime, str]:
    """The time and id of a token :func:`encode_page_token` made; ``id_pattern`` is the listing's id syntax.

    Raises:
        InvalidPageTokenError: anything else (see the module docstring).
    """
    if len(token) > MAX_PAGE_TOKEN_CHARS or not _ALPHABET.fullmatch(token):
        raise InvalidPageTokenError("not a page token of this API")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        parsed = json.loads(raw.decode())
    except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidPageTokenError("not a page token of this API") from exc
    if not isinstance(parsed, list) or len(parsed) != 2 or not all(isinstance(part, str) for part in parsed):
        raise InvalidPageTokenError("not a page token of this API")
    created_text, last_id = parsed
    try:
        created_at = datetime.fromisoformat(created_text)
    except ValueError as exc:
        raise InvalidPageTokenError("not a page token of this API") from exc
    if created_at.tzinfo is None or not re.fullmatch(id_pattern, last_id):
        raise InvalidPageTokenError("not a page token of this API")
    return created_at, last_id

"""Page tokens (issue 18, point 7): anything but a token this API issued is InvalidPageTokenError, nothing else."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from shared.jobs.records import JOB_ID_PATTERN
from shared.page_tokens import MAX_PAGE_TOKEN_CHARS, InvalidPageTokenError, decode_page_token, encode_page_token
from shared.store import DEPLOYMENT_ID_PATTERN


def token_of(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_a_token_round_trips() -> None:
    at = datetime(2026, 12, 7, 21, 0, 0, 123456, tzinfo=UTC)
    token = encode_page_token(at, "a" * 32)
    assert decode_page_token(token, DEPLOYMENT_ID_PATTERN) == (at, "a" * 32)
    long_job = "j" + "-x" * 63 + "y"
    assert len(encode_page_token(at, long_job)) <= MAX_PAGE_TOKEN_CHARS
    assert decode_page_token(encode_page_token(at, long_job), JOB_ID_PATTERN) == (at, long_job)


NESTED = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage!!",
        "A" * (MAX_PAGE_TOKEN_CHARS + 1),
        base64.urlsafe_b64encode(NESTED.encode()).decode(),  # RecursionError in json, and far too long
        token_of([[[[[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]]]),
        token_of(json.loads("[" * 150 + "]" * 150)),  # nested but short enough to decode
        token_of([1, 2]),
        token_of({"a": 1}),
        token_of(["2026-12-07T21:00:00+00:00"]),
        token_of(["2026-12-07T21:00:00+00:00", "a" * 32, "extra"]),
        token_of(["yesterday", "a" * 32]),
        token_of(["2026-12-07T21:00:00", "a" * 32]),  # no offset
        token_of(["2026-12-07T21:00:00+00:00", "../../x"]),
        token_of(["2026-12-07T21:00:00+00:00", "a" * 32 + "\n"]),
        base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("="),  # not UTF-8
        "WzEsIDJd=",  # padding is not ours
        "A",  # not base64
    ],
)
def test_a_malformed_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidPageTokenError):
        decode_page_token(token, DEPLOYMENT_ID_PATTERN)

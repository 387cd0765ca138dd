"""How long to wait after a 429: the reset of the exhausted ``RateLimit`` window, else ``Retry-After``."""

from __future__ import annotations

import pytest

from shared.runpod.errors import rate_limit_reset_s


@pytest.mark.parametrize(
    ("rate_limit", "retry_after", "expected"),
    [
        ('"minute";r=0;t=12, "hour";r=5;t=1812', None, 12.0),  # only the exhausted window counts
        ('"minute";r=3;t=12, "hour";r=0;t=1812', "7", 1812.0),
        ('"minute";r=0;t=12, "hour";r=0;t=1812', None, 1812.0),  # both exhausted: the later reset
        ('"minute" ; r=0 ; t=30', None, 30.0),  # spaces around the parameters
        ('"minute";r=59;t=60, "hour";r=2999;t=3600', "4", 4.0),  # nothing exhausted: Retry-After
        ('"minute";r=0;t=soon', "5", 5.0),  # an unreadable reset: Retry-After
        (None, "9", 9.0),
        (None, " 9 ", 9.0),
        (None, "Wed, 21 Oct 2026 07:28:00 GMT", None),  # an HTTP date is not read
        ('"minute";r=59;t=60', None, None),
        (None, None, None),
        ("", "", None),
    ],
)
def test_the_reset_of_the_exhausted_window_else_retry_after(
    rate_limit: str | None, retry_after: str | None, expected: float | None
) -> None:
    assert rate_limit_reset_s(rate_limit, retry_after) == expected

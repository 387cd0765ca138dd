"""The pure parts of the inference routes: query parsing, Runpod error mapping, output facts, input summaries."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from shared.errors import ApiError
from shared.job_input import GenerateInput
from shared.jobs.account_routes import _usage_period
from shared.jobs.invoke_keys import is_invoke_key, key_hash
from shared.jobs.records import JOB_ID_PATTERN, InputSummary, output_facts
from shared.jobs.routes import _page_size, _wait_ms, runpod_errors
from shared.page_tokens import decode_page_token
from shared.runpod.errors import (
    RunpodAuthError,
    RunpodNotFoundError,
    RunpodRejectedError,
    RunpodTimeoutError,
    RunpodUnavailableError,
)


def test_wait_and_limit_parsing() -> None:
    assert _wait_ms(None) == 90_000
    assert _wait_ms("1000") == 1000 and _wait_ms("300000") == 300_000
    for bad in ("999", "300001", "1e3", "", " 5000", "\u0665\u0660\u0660\u0660"):
        with pytest.raises(ApiError) as caught:
            _wait_ms(bad)
        assert caught.value.code == "invalid_wait"
    assert _page_size(None) == 20 and _page_size("100") == 100
    with pytest.raises(ApiError):
        _page_size("101")


def test_usage_period_defaults_to_the_last_30_days_and_refuses_bad_ones() -> None:
    first, last = _usage_period(None, "2026-03-31")
    assert (first, last) == (date(2026, 3, 2), date(2026, 3, 31))
    assert _usage_period("2026-01-01", "2026-01-01") == (date(2026, 1, 1), date(2026, 1, 1))
    first, last = _usage_period(None, None)
    assert last - first == timedelta(days=29)
    for query in (("2026-02-30", None), ("2026-02-01", "2026-01-01"), ("2024-01-01", "2026-01-01")):
        with pytest.raises(ApiError) as caught:
            _usage_period(*query)
        assert caught.value.code == "invalid_period"


@pytest.mark.parametrize(
    ("raised", "status", "code"),
    [
        (RunpodAuthError(), 502, "runpod_auth_failed"),
        (RunpodTimeoutError("slow"), 504, "runpod_timeout"),
        (RunpodUnavailableError("down", retry_after_s=7), 502, "runpod_unreachable"),
        (RunpodNotFoundError("gone"), 502, "runpod_endpoint_missing"),
        (RunpodRejectedError("no"), 502, "runpod_rejected"),
    ],
)
def test_runpod_failures_have_their_own_codes(raised: Exception, status: int, code: str) -> None:
    with pytest.raises(ApiError) as caught, runpod_errors():
        raise raised
    assert (caught.value.status, caught.value.code) == (status, code)
    if code == "runpod_unreachable":
        assert caught.value.headers["Retry-After"] == "7"


def test_output_facts_count_images_and_keep_only_urls() -> None:
    output = {"images": [{"image": "aGVsbG8=", "seed": 1}, {"url": "https://bucket/x.png?sig", "seed": 2}]}
    assert output_facts(output) == (2, ["https://bucket/x.png?sig"])
    assert output_facts({"stub": True}) == (0, [])
    assert output_facts(None) == (0, [])


def test_input_summary_has_sizes_not_content() -> None:
    request = GenerateInput.model_validate(
        {"prompt": "secret prompt", "negative_prompt": "blur", "width": 64, "height": 128, "image": "aGVsbG8="}
    )
    summary = InputSummary.of(request)
    assert (summary.prompt_chars, summary.negative_prompt_chars) == (13, 4)
    assert (summary.width, summary.height, summary.has_image, summary.has_mask_image) == (64, 128, True, False)
    assert "secret" not in summary.model_dump_json() and "aGVsbG8" not in summary.model_dump_json()


def test_invoke_key_helpers_and_page_tokens() -> None:
    assert is_invoke_key("vdk_abc") and not is_invoke_key("rp_abc")
    assert key_hash("vdk_x") != key_hash("vdk_y") and len(key_hash("vdk_x")) == 64
    with pytest.raises(ValueError):
        decode_page_token("WzEsIDJd", JOB_ID_PATTERN)  # [1, 2]: not ours

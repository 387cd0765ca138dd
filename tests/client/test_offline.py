"""The client's pure parts: webhook verification, the error shape, SSE parsing, what is retried (no stack)."""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from standardwebhooks.webhooks import Webhook
from visgate_client import WebhookVerificationError, errors, verify_webhook
from visgate_client._http import Transport, retry_safe, sse_events

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


def signed(body: bytes, secret: str = SECRET, at: datetime | None = None) -> dict[str, str]:
    """Headers for ``body`` as a Standard Webhooks sender makes them (the package itself signs)."""
    at = at or datetime.now(UTC)
    msg_id = "msg_" + os.urandom(8).hex()
    signature = Webhook(secret).sign(msg_id, at, body.decode())
    return {"Webhook-Id": msg_id, "Webhook-Timestamp": str(int(at.timestamp())), "Webhook-Signature": signature}


def test_verify_webhook_returns_the_payload_of_a_signed_delivery() -> None:
    body = json.dumps({"type": "deployment.ready", "data": {"deployment_id": "abc"}}).encode()
    assert verify_webhook(signed(body), body, SECRET)["type"] == "deployment.ready"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, b: (h, b + b" "),  # body changed
        lambda h, b: ({**h, "Webhook-Id": "msg_other"}, b),  # id changed
        lambda h, b: ({k: v for k, v in h.items() if k != "Webhook-Signature"}, b),  # header missing
        lambda h, b: ({**h, "Webhook-Signature": "v1"}, b),  # malformed signature
        lambda h, b: (signed(b, at=datetime.now(UTC) - timedelta(minutes=10)), b),  # replayed later
        lambda h, b: (signed(b, secret="whsec_" + base64.b64encode(b"another secret!!").decode()), b),  # wrong key
    ],
)
def test_verify_webhook_refuses_what_does_not_verify(tamper: Any) -> None:
    body = b'{"type": "deployment.failed"}'
    headers, sent = tamper(signed(body), body)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers, sent, SECRET)


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response.raw = io.BytesIO(response._content)
    response.headers.update(headers or {})
    return response


def test_each_error_code_has_its_class_and_unknown_codes_stay_readable() -> None:
    body = {
        "error": {
            "code": "rate_limited",
            "message": "slow down",
            "details": {"limit_per_minute": 5},
            "request_id": "r1",
        }
    }
    error = errors.error_from_response(answer(429, body, {"Retry-After": "7"}))
    assert isinstance(error, errors.RateLimitedError)
    assert (error.code, error.status, error.request_id, error.retry_after_s) == ("rate_limited", 429, "r1", 7.0)
    assert str(error) == "rate_limited: slow down (request_id r1)"

    future = errors.error_from_response(
        answer(422, {"error": {"code": "brand_new", "message": "m", "request_id": "x"}})
    )
    assert type(future) is errors.ApiError and future.code == "brand_new"
    assert errors.ApiError.code == "unknown"  # an instance's code never leaks into the class

    html = errors.error_from_response(answer(502, b"<html>Bad Gateway</html>", {"X-Request-Id": "r2"}))
    assert html.code == "http_error" and "Bad Gateway" in html.message and html.request_id == "r2"

    codes = {cls.code for cls in errors.ApiError._by_code.values()}
    assert {"deployment_not_found", "invalid_request", "unauthenticated", "rate_limited", "internal"} <= codes


def test_only_safe_requests_are_retried() -> None:
    assert retry_safe("GET", {}) and retry_safe("DELETE", {})
    assert retry_safe("POST", {"Idempotency-Key": "k"})
    assert not retry_safe("POST", {})


class FlakySession(requests.Session):
    def __init__(self, answers: list[requests.Response | Exception]) -> None:
        super().__init__()
        self.answers = answers
        self.calls = 0

    def request(self, *_args: Any, **_kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.calls += 1
        item = self.answers.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


def test_transport_retries_a_get_but_not_a_keyless_post() -> None:
    flaky = FlakySession([requests.ConnectionError("reset"), answer(503, {}), answer(200, {"ok": True})])
    transport = Transport(flaky, "http://api", {}, backoff_s=0.001)
    assert transport.request("GET", "/x").json() == {"ok": True} and flaky.calls == 3

    once = FlakySession([answer(503, {"error": {"code": "unavailable", "message": "m", "request_id": "r"}})])
    with pytest.raises(errors.UnavailableError):
        Transport(once, "http://api", {}, backoff_s=0.001).request("POST", "/x")
    assert once.calls == 1


def stream_of(text: str) -> requests.Response:
    response = answer(200, b"")

    def chunks(chunk_size: int | None = None) -> Iterator[bytes]:
        data = text.encode()
        yield from (data[i : i + 7] for i in range(0, len(data), 7))  # lines split across chunks

    response.iter_content = chunks  # type: ignore[method-assign]
    return response


def test_sse_parser_follows_the_spec() -> None:
    text = 'retry: 2000\n\n: keep-alive\n\nid: 3\nevent: deployment\ndata: {"a":\ndata: 1}\n\nevent: end\ndata: x\n\n'
    events = list(sse_events(stream_of(text)))
    assert [e.retry_ms for e in events] == [2000, None, None]
    assert events[1].event == "deployment" and events[1].id == "3" and json.loads(events[1].data) == {"a": 1}
    assert events[2].event == "end" and events[2].id == "3"  # the last id carries over, as in browsers

"""The client's pure parts: webhook verification, the error shape, SSE parsing, what is retried, how a job's
answers are read, what the CLI asks and reports (no stack)."""

from __future__ import annotations

import ast
import base64
import graphlib
import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import visgate_client
from click.testing import CliRunner
from PIL import Image
from standardwebhooks.webhooks import Webhook
from visgate_client import (
    Client,
    Deployment,
    JobFailedError,
    JobOutputUnavailableError,
    WebhookVerificationError,
    errors,
    verify_webhook,
)
from visgate_client import cli as visgate_cli
from visgate_client._http import Transport, retry_safe, sse_events
from visgate_client.cli import state as cli_state
from visgate_client.cli import waiting as cli_waiting

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


# --- inference through the API, answer by answer (the stack cannot order a job's end against its polls) -----------


def png_b64(size: tuple[int, int] = (8, 8)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, "red").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class ScriptedSession(requests.Session):
    """Answers each request with the next scripted answer and records what was asked (method, path, params, body)."""

    def __init__(self, answers: list[requests.Response]) -> None:
        super().__init__()
        self.answers = answers
        self.asked: list[tuple[str, str, Any, Any]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.asked.append((method, url.removeprefix("http://api"), kwargs.get("params"), kwargs.get("json")))
        return self.answers.pop(0)


def deployment_with(answers: list[requests.Response]) -> tuple[Deployment, ScriptedSession]:
    session = ScriptedSession(answers)
    client = Client("http://api", "rp_key", session=session)
    return Deployment(client.transport, {"deployment_id": "d1"}), session


def job_view(status: str, **fields: Any) -> dict[str, Any]:
    return {"job_id": "j1", "deployment_id": "d1", "status": status, "output": None, **fields}


def test_runsync_that_ends_in_time_reads_the_metrics_in_seconds() -> None:
    ended = {
        "job_id": "j1",
        "status": "COMPLETED",
        "output": {"images": [{"image": png_b64(), "seed": 3}], "timings": {"inference_s": 0.2}},
        "error": None,
        "metrics": {"delay_ms": 1500, "execution_ms": 250, "estimated_cost_usd": 0.00004, "pool": "AMPERE_16"},
        "status_url": "http://elsewhere/v1/deployments/d1/jobs/j1",
    }
    deployment, session = deployment_with([answer(200, ended)])
    result = deployment.runsync({"prompt": "p"}, timeout=20, webhook_url="https://example.com/hook")
    assert (result.delay_time_s, result.execution_time_s, result.inference_s) == (1.5, 0.25, 0.2)
    assert (result.estimated_cost_usd, result.pool, result.seeds) == (0.00004, "AMPERE_16", [3])
    assert result.images[0].size == (8, 8) and "image" not in result.output["images"][0]
    assert session.asked == [
        (
            "POST",
            "/v1/deployments/d1/runsync",
            {"wait": 20_000},
            {"input": {"prompt": "p"}, "webhook_url": "https://example.com/hook"},
        )
    ]


def test_a_job_keeps_the_output_of_the_answer_that_saw_it_end() -> None:
    ended = job_view("COMPLETED", delay_ms=10, execution_ms=20, output={"images": [{"image": png_b64(), "seed": 9}]})
    deployment, session = deployment_with(
        [answer(202, {"job_id": "j1", "status": "IN_QUEUE"}), answer(200, job_view("IN_PROGRESS")), answer(200, ended)]
    )
    result = deployment.runsync({"prompt": "p"}, timeout=None)
    assert result.seeds == [9] and result.images and result.execution_time_s == 0.02
    assert [ask[:2] for ask in session.asked] == [
        ("POST", "/v1/deployments/d1/runsync"),
        ("GET", "/v1/deployments/d1/jobs/j1"),
        ("GET", "/v1/deployments/d1/jobs/j1"),
    ]
    assert session.asked[0][2] == {"wait": 45_000}


def test_a_final_job_is_never_asked_again_so_its_output_stays() -> None:
    ended = job_view("COMPLETED", output={"images": [{"image": png_b64(), "seed": 1}]})
    deployment, session = deployment_with([answer(202, {"job_id": "j1", "status": "IN_QUEUE"}), answer(200, ended)])
    job = deployment.run({"prompt": "p"})
    assert job.status() == "COMPLETED"
    assert job.status() == "COMPLETED" and job.cancel() is job  # neither asks: the job is final
    assert job.wait().seeds == [1] and job.wait().images  # the kept answer, with its output
    assert len(session.asked) == 2 and session.answers == []


def test_a_final_answer_without_the_output_says_where_it_went() -> None:
    deployment, _ = deployment_with([answer(200, job_view("COMPLETED", images=1))])
    with pytest.raises(JobOutputUnavailableError) as caught:
        deployment.job("j1").wait()
    assert caught.value.job_id == "j1" and caught.value.view["images"] == 1

    refs = ["https://bucket.example/j1/0.png?X-Amz-Signature=s"]
    deployment, _ = deployment_with([answer(200, job_view("COMPLETED", output_refs=refs))])
    result = deployment.job("j1").wait()
    assert result.image_urls == refs and result.images == []


def test_cancel_and_the_failed_end_it_gives() -> None:
    cancelled = job_view("CANCELLED", error="cancelled by the user")
    deployment, session = deployment_with([answer(202, {"job_id": "j1", "status": "IN_QUEUE"}), answer(200, cancelled)])
    job = deployment.run({"prompt": "p"}).cancel()
    assert job.last_status == "CANCELLED"
    assert session.asked[1][:2] == ("POST", "/v1/deployments/d1/jobs/j1/cancel")
    with pytest.raises(JobFailedError) as caught:
        job.wait()
    assert caught.value.status == "CANCELLED" and caught.value.error == "cancelled by the user"


def test_api_errors_of_the_job_routes_are_typed() -> None:
    def error(status: int, code: str) -> requests.Response:
        return answer(status, {"error": {"code": code, "message": "m", "request_id": "r"}})

    deployment, _ = deployment_with([error(409, "deployment_not_ready"), error(404, "job_not_found")])
    with pytest.raises(errors.NotReadyError):
        deployment.run({"prompt": "p"})
    with pytest.raises(errors.JobNotFoundError):
        deployment.job("nosuchjob")
    for code in ("runpod_unreachable", "runpod_auth_failed", "runpod_timeout"):
        assert issubclass(errors.ApiError.for_code(code), errors.RunpodError)


def test_the_client_modules_import_one_way() -> None:
    """Each part is built from what it uses: client -> deployment -> inference -> _http, and no module of the
    package imports one that imports it back, not even for types."""
    package = Path(visgate_client.__file__).parent
    graph: dict[str, set[str]] = {}
    for source in package.rglob("*.py"):  # the cli/ package's modules too, as "cli.jobs" (its __init__ as "cli")
        parts = source.relative_to(package).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)
        imported = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("visgate_client"):
                base = str(node.module).removeprefix("visgate_client").removeprefix(".")
                below = package.joinpath(*base.split(".")) if base else package
                for alias in node.names:  # `from visgate_client.cli import jobs` imports the module cli.jobs
                    if (below / f"{alias.name}.py").exists():
                        imported.add(f"{base}.{alias.name}" if base else alias.name)
                    elif base:
                        imported.add(base)
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError at a circle
    assert order.index("_http") < order.index("inference") < order.index("deployment") < order.index("client")


# --- the CLI: what it asks the API and what it reports ------------------------------------------------------------


def test_a_started_deployment_reports_only_the_phases_of_its_start() -> None:
    first = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    at = {
        "validating": 0,
        "selecting_gpu": 1,
        "creating_endpoint": 2,
        "stopped": 60,  # each status keeps its latest time: this start has overwritten the first ready
        "downloading_model": 100,
        "loading_model": 103,
        "ready": 107.5,
    }
    view = {
        "deployment_id": "d1",
        "phase_timestamps": {n: (first + timedelta(seconds=s)).isoformat() for n, s in at.items()},
    }
    report = cli_waiting.ready_report(Deployment(Client("http://api", "rp_key").transport, view))
    assert report["total_s"] == 7.5
    assert report["phases"] == {"downloading_model": 3.0, "loading_model": 4.5}

    never_stopped = {name: stamp for name, stamp in view["phase_timestamps"].items() if name != "stopped"}
    fresh = cli_waiting.ready_report(
        Deployment(Client("http://api", "rp_key").transport, {**view, "phase_timestamps": never_stopped})
    )
    assert fresh["total_s"] == 107.5
    assert list(fresh["phases"]) == [
        "validating",
        "selecting_gpu",
        "creating_endpoint",
        "downloading_model",
        "loading_model",
    ]


def test_jobs_ls_pages_no_further_than_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    page = {"jobs": [job_view("COMPLETED", job_id=f"j{n}", created_at=None) for n in range(3)], "next_page_token": "t"}
    session = ScriptedSession([answer(200, page)])
    monkeypatch.setattr(cli_state, "Client", lambda url, key: Client(url, key, session=session))
    done = CliRunner().invoke(
        visgate_cli.cli,
        ["--api-url", "http://api", "--api-key", "rp_key", "jobs", "ls", "d1", "--limit", "3", "--json"],
    )
    assert done.exit_code == 0, done.output
    assert [view["job_id"] for view in json.loads(done.stdout)] == ["j0", "j1", "j2"]
    assert session.asked == [("GET", "/v1/deployments/d1/jobs", {"limit": 3}, None)]  # no second page asked for

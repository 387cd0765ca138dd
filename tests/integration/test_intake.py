"""The intake API against the real Firestore and Pub/Sub emulators, through functions-framework's test client."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore

from shared.errors import RetryableError
from shared.store import DEPLOYMENTS, SECRETS, DeploymentStore
from tests.integration.conftest import register_runpod_key
from tests.support.waiting import eventually

pytestmark = pytest.mark.usefixtures("intake_env")


def key() -> str:
    """A fresh Runpod key the simulator knows (the intake API verifies each new key with Runpod)."""
    return register_runpod_key(os.environ["RUNPOD_API_BASE_URL"], f"rp_test_{uuid.uuid4().hex}")


def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def test_create_returns_202_and_writes_everything(intake_client: Any, db: firestore.Client, requested: Any) -> None:
    api_key = key()
    resp = intake_client.post(
        "/v1/deployments",
        json={"hf_model_id": "visgate-tiny/sd-tiny", "hf_token": "hf_very_secret"},
        headers=auth(api_key),
    )
    assert resp.status_code == 202, resp.json
    body = resp.json
    assert body["status"] == "validating"
    assert resp.headers["Location"] == body["status_url"]
    assert body["status_url"].endswith(f"/v1/deployments/{body['deployment_id']}")
    assert body["stream_url"].endswith("/stream")

    doc = db.collection(DEPLOYMENTS).document(body["deployment_id"]).get().to_dict()
    assert doc["hf_model_id"] == "visgate-tiny/sd-tiny"
    assert doc["phase_timestamps"]["validating"] == doc["created_at"]
    assert doc["has_hf_token"] is True
    flat = json.dumps(doc, default=str)
    assert api_key not in flat and "hf_very_secret" not in flat
    sealed = db.collection(SECRETS).document(body["deployment_id"]).get().to_dict()
    assert api_key.encode() not in sealed["sealed"] and b"hf_very_secret" not in sealed["sealed"]

    message = requested(body["deployment_id"])
    assert json.loads(message.data)["deployment_id"] == body["deployment_id"]
    assert api_key not in message.data.decode() and "hf_very_secret" not in message.data.decode()


def test_get_is_public_view_and_other_tenants_get_404(intake_client: Any) -> None:
    api_key = key()
    created = intake_client.post("/v1/deployments", json={"hf_model_id": "org/model"}, headers=auth(api_key)).json
    mine = intake_client.get(f"/v1/deployments/{created['deployment_id']}", headers=auth(api_key))
    assert mine.status_code == 200
    assert mine.json["hf_model_id"] == "org/model"
    assert "owner" not in mine.json
    theirs = intake_client.get(f"/v1/deployments/{created['deployment_id']}", headers={"X-Runpod-Api-Key": key()})
    assert theirs.status_code == 404
    assert theirs.json["error"]["code"] == "deployment_not_found"
    assert intake_client.delete(f"/v1/deployments/{created['deployment_id']}", headers=auth(key())).status_code == 404


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}, {"X-Runpod-Api-Key": "  "}],
)
def test_missing_key_is_401(intake_client: Any, headers: dict[str, str]) -> None:
    resp = intake_client.post("/v1/deployments", json={"hf_model_id": "a/b"}, headers=headers)
    assert resp.status_code == 401
    assert set(resp.json["error"]) >= {"code", "message", "request_id"}


def test_list_is_per_caller_paginated_and_counted(intake_client: Any) -> None:
    api_key = key()
    ids = [
        intake_client.post("/v1/deployments", json={"hf_model_id": f"org/m{i}"}, headers=auth(api_key)).json[
            "deployment_id"
        ]
        for i in range(5)
    ]
    intake_client.post("/v1/deployments", json={"hf_model_id": "org/other"}, headers=auth(key()))
    intake_client.delete(f"/v1/deployments/{ids[0]}", headers=auth(api_key))

    seen: list[str] = []
    token = None
    while True:
        query = "limit=2" + (f"&page_token={token}" if token else "")
        page = intake_client.get(f"/v1/deployments?{query}", headers=auth(api_key)).json
        assert len(page["deployments"]) <= 2
        seen += [d["deployment_id"] for d in page["deployments"]]
        token = page["next_page_token"]
        if not token:
            break
    assert sorted(seen) == sorted(ids)
    assert seen == sorted(seen, key=ids.index, reverse=True)  # newest first
    # Provisioning may be moving these along meanwhile (when the whole stack runs): count what the list shows.
    statuses = {
        dep_id: intake_client.get(f"/v1/deployments/{dep_id}", headers=auth(api_key)).json["status"] for dep_id in ids
    }
    counts = intake_client.get("/v1/deployments?limit=1", headers=auth(api_key)).json["counts_by_status"]
    assert sum(counts.values()) == 5
    assert statuses[ids[0]] in ("deleting", "deleted")
    assert counts["deleting"] + counts["deleted"] >= 1

    wanted = statuses[ids[0]]
    filtered = intake_client.get(f"/v1/deployments?status={wanted}", headers=auth(api_key)).json
    assert ids[0] in [d["deployment_id"] for d in filtered["deployments"]]
    assert {d["status"] for d in filtered["deployments"]} == {wanted}


# A page token whose JSON nests 100,000 deep: json.loads raised RecursionError, a 500 (issue 18).
NESTED_TOKEN = base64.urlsafe_b64encode(("[" * 100_000 + "]" * 100_000).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("status=bogus", "invalid_status"),
        ("limit=0", "invalid_limit"),
        ("limit=abc", "invalid_limit"),
        ("limit=%C2%B2", "invalid_limit"),  # '²': isdigit() says yes, int() says no
        ("limit=%D9%A1", "invalid_limit"),  # Arabic-Indic one
        ("limit=+5", "invalid_limit"),
        ("page_token=garbage!!", "invalid_page_token"),
        (f"page_token={NESTED_TOKEN}", "invalid_page_token"),  # was a RecursionError (500)
        ("page_token=" + "A" * 600, "invalid_page_token"),  # longer than any token we issue
        ("page_token=WyIyMDI2LTEyLTA3VDIxOjAwOjAwKzAwOjAwIiwgIi4uLy4uL3giXQ", "invalid_page_token"),  # not an id
    ],
)
def test_list_refuses_bad_queries(intake_client: Any, query: str, code: str) -> None:
    resp = intake_client.get(f"/v1/deployments?{query}", headers=auth(key()))
    assert resp.status_code == 400
    assert resp.json["error"]["code"] == code


def test_delete_is_idempotent_and_publishes(intake_client: Any, deleted: Any) -> None:
    api_key = key()
    dep = intake_client.post("/v1/deployments", json={"hf_model_id": "a/b"}, headers=auth(api_key)).json[
        "deployment_id"
    ]
    first = intake_client.delete(f"/v1/deployments/{dep}", headers=auth(api_key))
    second = intake_client.delete(f"/v1/deployments/{dep}", headers=auth(api_key))
    assert (first.status_code, first.json["status"]) == (202, "deleting")
    assert (second.status_code, second.json["status"]) == (202, "deleting")
    assert json.loads(deleted(dep).data)["deployment_id"] == dep
    logs = intake_client.get(f"/v1/deployments/{dep}/logs", headers=auth(api_key)).json["events"]
    messages = [line["message"] for line in logs]
    assert messages[0] == "deployment accepted"
    assert messages.count("delete requested by the owner") == 1  # the repeat changed nothing


def _count(db: firestore.Client, field: str, value: str) -> int:
    query = db.collection(DEPLOYMENTS).where(filter=firestore.FieldFilter(field, "==", value))
    return int(query.count().get()[0][0].value)


def test_idempotency_key_replays_and_conflicts(intake_client: Any, db: firestore.Client) -> None:
    api_key = key()
    headers = {**auth(api_key), "Idempotency-Key": "order-42"}
    first = intake_client.post("/v1/deployments", json={"hf_model_id": "a/b", "workers_max": 2}, headers=headers)
    # Same JSON, other key order: the same request.
    again = intake_client.post(
        "/v1/deployments",
        data='{"workers_max": 2, "hf_model_id": "a/b"}',
        headers=headers,
        content_type="application/json",
    )
    assert first.status_code == again.status_code == 202
    assert first.json == again.json
    other = intake_client.post("/v1/deployments", json={"hf_model_id": "a/c"}, headers=headers)
    assert other.status_code == 409
    assert other.json["error"]["code"] == "idempotency_key_reused"
    # Another tenant may use the same key string independently.
    theirs = intake_client.post(
        "/v1/deployments", json={"hf_model_id": "a/c"}, headers={**auth(key()), "Idempotency-Key": "order-42"}
    )
    assert theirs.status_code == 202
    owner = db.collection(DEPLOYMENTS).document(first.json["deployment_id"]).get().to_dict()["owner"]
    assert _count(db, "owner", owner) == 1


def test_concurrent_duplicates_create_exactly_one(intake_client_factory: Any, db: firestore.Client) -> None:
    api_key = key()
    headers = {**auth(api_key), "Idempotency-Key": f"k-{uuid.uuid4().hex}"}

    clients = [intake_client_factory() for _ in range(8)]

    def post(i: int) -> Any:
        return clients[i].post("/v1/deployments", json={"hf_model_id": "a/b"}, headers=headers)

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(post, range(8)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json["deployment_id"] for r in responses}) == 1
    owner = db.collection(DEPLOYMENTS).document(responses[0].json["deployment_id"]).get().to_dict()["owner"]
    assert _count(db, "owner", owner) == 1


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        (
            {"data": "hf_model_id=a/b", "content_type": "application/x-www-form-urlencoded"},
            415,
            "unsupported_media_type",
        ),
        ({"data": "{not json", "content_type": "application/json"}, 400, "invalid_json"),
        (
            {"data": json.dumps({"hf_model_id": "a/b", "x": "y" * 70000}), "content_type": "application/json"},
            413,
            "payload_too_large",
        ),
        ({"json": {"hf_model_id": "a/b", "bogus": 1}}, 400, "invalid_request"),
        ({"json": {"hf_model_id": "../etc"}}, 400, "invalid_request"),
        ({"json": {"hf_model_id": "a/b", "gpu_tier": "huge"}}, 400, "invalid_request"),
        ({"json": {"hf_model_id": "a/b", "user_webhook_url": "https://169.254.169.254/x"}}, 400, "invalid_request"),
        ({"json": {"hf_model_id": "a/b", "cache_scope": "private"}}, 400, "invalid_request"),
        ({"json": ["not", "an", "object"]}, 400, "invalid_request"),
    ],
)
def test_refused_bodies_write_nothing(
    intake_client: Any, db: firestore.Client, kwargs: dict[str, Any], status: int, code: str
) -> None:
    api_key = key()
    resp = intake_client.post("/v1/deployments", headers=auth(api_key), **kwargs)
    assert resp.status_code == status, resp.json
    assert resp.json["error"]["code"] == code
    assert resp.json["error"]["request_id"] == resp.headers["X-Request-Id"]
    listed = intake_client.get("/v1/deployments", headers=auth(api_key)).json
    assert listed["deployments"] == []
    assert sum(listed["counts_by_status"].values()) == 0


def test_unknown_gpu_tier_lists_valid_tiers(intake_client: Any) -> None:
    resp = intake_client.post("/v1/deployments", json={"hf_model_id": "a/b", "gpu_tier": "huge"}, headers=auth(key()))
    problem = resp.json["error"]["details"][0]
    assert problem["field"] == "gpu_tier"
    for tier in ("economy", "standard", "performance", "flagship"):
        assert tier in problem["problem"]


def test_secrets_never_echoed_in_errors(intake_client: Any) -> None:
    resp = intake_client.post(
        "/v1/deployments", json={"hf_model_id": "a/b", "hf_token": 12345678901, "workers_max": 99}, headers=auth(key())
    )
    assert resp.status_code == 400
    assert "12345678901" not in resp.get_data(as_text=True)


def _fixed_clock() -> Callable[[], float]:
    """A clock 10 s into a future rate window that stays put: a test never straddles two windows, nor waits."""
    at = (time.time() // 60 + 1) * 60 + 10
    return lambda: at


def test_rate_limit_429_with_retry_after(db: firestore.Client) -> None:
    intake_client = _intake(db, clock=_fixed_clock())
    headers = auth(key())
    nope = f"/v1/deployments/{uuid.uuid4().hex}"
    codes = [intake_client.get(nope, headers=headers).status_code for _ in range(125)]
    assert codes.count(404) == 120
    assert codes[-1] == 429
    limited = intake_client.get(nope, headers=headers)
    assert int(limited.headers["Retry-After"]) == 51
    assert limited.json["error"]["code"] == "rate_limited"
    # Another tenant is not affected.
    assert intake_client.get(nope, headers=auth(key())).status_code == 404


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize(
    "path",
    [
        "/v1/deployments/__x__",
        "/v1/deployments/__x__/logs",
        "/v1/deployments/__x__/stream",
        "/v1/deployments/.",
        "/v1/deployments/./logs",
        "/v1/deployments/..%2F..%2Fsecrets",
        f"/v1/deployments/{'A' * 32}",
        f"/v1/deployments/{'a' * 33}",
    ],
)
def test_ids_we_never_issue_are_404_without_asking_firestore(intake_client: Any, method: str, path: str) -> None:
    # Firestore refuses some of these ids outright (InvalidArgument): they must never reach it.
    resp = intake_client.open(path, method=method, headers=auth(key()))
    assert resp.status_code == 404, resp.get_data(as_text=True)
    assert resp.json["error"]["code"] == "not_found"
    assert resp.json["error"]["request_id"] == resp.headers["X-Request-Id"]


def test_unknown_route_and_method(intake_client: Any) -> None:
    assert intake_client.get("/v2/nothing").json["error"]["code"] == "not_found"
    resp = intake_client.put("/v1/deployments", headers=auth(key()))
    assert resp.status_code == 405
    assert "POST" in resp.headers["Allow"]


def test_health_metrics_openapi(intake_client: Any) -> None:
    assert intake_client.get("/health").json == {"status": "ok"}
    intake_client.post("/v1/deployments", json={"hf_model_id": "a/b"}, headers=auth(key()))
    token = {"Authorization": f"Bearer {os.environ['METRICS_TOKEN']}"}
    text = intake_client.get("/metrics", headers=token).get_data(as_text=True)
    assert 'visgate_deployments{status="validating"}' in text
    assert 'visgate_http_requests_total{route="create_deployment",code="202"}' in text


def test_openapi_describes_exactly_the_routes(intake_client: Any) -> None:

    from openapi_spec_validator import validate

    from shared.intake.app import ROUTES

    doc = intake_client.get("/openapi.json").json
    validate(doc)
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method)
        for rule in ROUTES.iter_rules()
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    assert documented == served
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            assert "500" in codes, (method, path)  # the catch-all can answer any route
            if op.get("security") == [{"metricsToken": []}]:  # the operator's token: no tenant, no rate window
                assert "401" in codes, (method, path)
            elif op.get("security") != []:
                assert {"401", "429", "503"} <= codes, (method, path)
            for code in ("429", "503"):
                if code in codes:
                    assert "Retry-After" in op["responses"][code]["headers"]
    request_schema = doc["components"]["schemas"]["CreateDeploymentRequest"]
    assert request_schema["additionalProperties"] is False
    assert set(request_schema["properties"]) >= {"hf_model_id", "revision", "gpu_tier", "cache_scope", "ttl_minutes"}


def test_openapi_patterns_are_the_validation(intake_client: Any) -> None:
    """The documented patterns accept and refuse what the API accepts and refuses."""

    props = intake_client.get("/openapi.json").json["components"]["schemas"]["CreateDeploymentRequest"]["properties"]
    for field, value, ok in [
        ("hf_model_id", "org/_model_", True),
        ("hf_model_id", "org/a..b", False),
        ("hf_model_id", "-org/model", False),
        ("revision", "v1.0/rc", True),
        ("revision", "../main", False),
    ]:
        assert bool(re.fullmatch(props[field]["pattern"], value)) is ok, (field, value)
        resp = intake_client.post("/v1/deployments", json={"hf_model_id": "a/b", field: value}, headers=auth(key()))
        assert (resp.status_code == 202) is ok, (field, value, resp.json)
    assert props["hf_model_id"]["maxLength"] == 193
    assert props["revision"]["maxLength"] == 255
    assert props["hf_token"]["minLength"] == 1


def _conforms(doc: dict[str, Any], method: str, path: str, resp: Any) -> None:
    """The response's status, content type, documented headers and JSON body are as ``doc`` says for the route."""
    import jsonschema

    operation = doc["paths"][path][method.lower()]
    assert str(resp.status_code) in operation["responses"], (method, path, resp.status_code)
    documented = operation["responses"][str(resp.status_code)]
    for header in documented.get("headers", {}):
        assert header in resp.headers, (method, path, resp.status_code, header)
    content = documented.get("content", {})
    if content:
        (media_type,) = content
        assert resp.headers["Content-Type"] == media_type or resp.mimetype == media_type, (path, resp.content_type)
        schema = content[media_type].get("schema")
        if schema and media_type == "application/json":
            jsonschema.validate(resp.json, {**schema, "components": doc["components"]})


def test_real_responses_conform_to_openapi(intake_client: Any, db: firestore.Client) -> None:
    from shared.intake.ratelimit import current_window
    from shared.server_records import RATE_LIMITS

    doc = intake_client.get("/openapi.json").json
    metrics_token = os.environ["METRICS_TOKEN"]
    api_key = key()
    dep = intake_client.post("/v1/deployments", json={"hf_model_id": "a/b"}, headers=auth(api_key))
    item = "/v1/deployments/{deployment_id}"
    one = f"/v1/deployments/{dep.json['deployment_id']}"
    reused = {**auth(api_key), "Idempotency-Key": "k"}
    intake_client.post("/v1/deployments", json={"hf_model_id": "a/b"}, headers=reused)
    cases = [
        ("POST", "/v1/deployments", dep),
        (
            "POST",
            "/v1/deployments",
            intake_client.post("/v1/deployments", json={"hf_model_id": "-"}, headers=auth(api_key)),
        ),
        ("POST", "/v1/deployments", intake_client.post("/v1/deployments", data="x", headers=auth(api_key))),
        ("POST", "/v1/deployments", intake_client.post("/v1/deployments", json={"hf_model_id": "a/c"}, headers=reused)),
        ("POST", "/v1/deployments", intake_client.post("/v1/deployments", json={"hf_model_id": "a/b"})),
        ("GET", "/v1/deployments", intake_client.get("/v1/deployments", headers=auth(api_key))),
        ("GET", "/v1/deployments", intake_client.get("/v1/deployments?limit=0", headers=auth(api_key))),
        ("GET", item, intake_client.get(one, headers=auth(api_key))),
        ("GET", item, intake_client.get(one, headers=auth(key()))),
        ("GET", item + "/logs", intake_client.get(one + "/logs", headers=auth(api_key))),
        ("DELETE", item, intake_client.delete(one, headers=auth(api_key))),
        ("GET", "/health", intake_client.get("/health")),
        ("GET", "/metrics", intake_client.get("/metrics")),
        ("GET", "/metrics", intake_client.get("/metrics", headers={"Authorization": f"Bearer {metrics_token}"})),
        ("GET", "/openapi.json", intake_client.get("/openapi.json")),
        ("GET", item, _intake(db, _FailingStore(db, RuntimeError("bug"))).get(one, headers=auth(api_key))),
        ("GET", item, _intake(db, _FailingStore(db, gexc.ServiceUnavailable("x"))).get(one, headers=auth(api_key))),
    ]
    clock = _fixed_clock()
    full = key()
    window = current_window(_tenant(full), 120, now=clock())
    db.collection(RATE_LIMITS).document(window.key).set({"count": 120, "expires_at": window.expires_at})
    cases.append(("GET", "/v1/deployments", _intake(db, clock=clock).get("/v1/deployments", headers=auth(full))))
    assert {resp.status_code for _, _, resp in cases} >= {200, 202, 400, 401, 404, 409, 415, 429, 500, 503}
    for method, path, resp in cases:
        _conforms(doc, method, path, resp)
    metrics = intake_client.get("/metrics", headers={"Authorization": f"Bearer {metrics_token}"})
    assert metrics.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"


def test_stream_sends_current_state_then_changes(intake_client: Any, db: firestore.Client) -> None:
    api_key = key()
    dep = intake_client.post("/v1/deployments", json={"hf_model_id": "a/b"}, headers=auth(api_key)).json[
        "deployment_id"
    ]
    with intake_client.get(f"/v1/deployments/{dep}/stream", headers=auth(api_key), buffered=False) as resp:
        assert resp.mimetype == "text/event-stream"
        chunks = iter(resp.response)
        events = _sse_until(chunks, lambda evs: any(e == "deployment" for e, _ in evs))
        first = json.loads(events[-1][1])
        assert first["deployment_id"] == dep
        if first["status"] in ("failed", "deleted"):
            # Provisioning (when the whole stack runs) already ended it: the stream says so and closes.
            assert _sse_until(chunks, lambda evs: any(e == "end" for e, _ in evs))[-1][0] == "end"
            return
        # Any change to the document reaches the stream: here one more event-log line.
        DeploymentStore(db).log(dep, "a change the stream must show")
        more = _sse_until(chunks, lambda evs: any(e in ("deployment", "end") for e, _ in evs))
        assert more[-1][0] in ("deployment", "end")
        if more[-1][0] == "deployment":
            assert json.loads(more[-1][1])["phase_timestamps"]["validating"]
    assert intake_client.get(f"/v1/deployments/{dep}/stream", headers=auth(key())).status_code == 404


def _sse_until(chunks: Any, done: Any) -> list[tuple[str, str]]:
    """Read SSE chunks until ``done(events)``; events are ``(event, data)`` pairs."""
    events: list[tuple[str, str]] = []
    buffer = ""
    for chunk in chunks:
        buffer += chunk.decode()
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            fields = dict(
                line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":")
            )
            if "event" in fields:
                events.append((fields["event"], fields.get("data", "")))
        if done(events):
            return events
    return events


def test_secrets_never_logged(intake_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    api_key = key()
    caplog.set_level("DEBUG")
    body = {
        "hf_model_id": "a/b",
        "hf_token": "hf_log_canary_token",
        "cache_scope": "private",
        "user_s3_url": "s3://bucket/p",
        "user_aws_access_key_id": "AKIA_LOG_CANARY",
        "user_aws_secret_access_key": "aws_log_canary_secret",
    }
    assert intake_client.post("/v1/deployments", json=body, headers=auth(api_key)).status_code == 202
    assert (
        intake_client.post("/v1/deployments", json={**body, "workers_max": 0}, headers=auth(api_key)).status_code == 400
    )
    for secret in (api_key, "hf_log_canary_token", "AKIA_LOG_CANARY", "aws_log_canary_secret"):
        assert secret not in caplog.text


def test_create_counts_in_its_commit_and_over_the_limit_writes_nothing(db: firestore.Client) -> None:
    from shared.config import IntakeSettings, get_settings
    from shared.crypto import tenant_id

    intake_client = _intake(db, clock=_fixed_clock())
    api_key = key()
    headers = auth(api_key)
    for _ in range(118):
        assert intake_client.get(f"/v1/deployments/{uuid.uuid4().hex}", headers=headers).status_code == 404
    refused = intake_client.post("/v1/deployments", json={"hf_model_id": "a/b", "bogus": 1}, headers=headers)
    assert refused.status_code == 400  # the 119th request: refused bodies count too
    assert intake_client.post("/v1/deployments", json={"hf_model_id": "a/b"}, headers=headers).status_code == 202
    over = intake_client.post("/v1/deployments", json={"hf_model_id": "a/c"}, headers=headers)
    assert over.status_code == 429
    assert over.json["error"]["code"] == "rate_limited"
    owner = tenant_id(get_settings(IntakeSettings).tenant_pepper.get_secret_value(), api_key)
    assert _count(db, "owner", owner) == 1


def _intake(
    db: firestore.Client,
    store: DeploymentStore | None = None,
    publisher: Any = None,
    clock: Callable[[], float] = time.time,
) -> Any:
    """A test client for one more intake instance, on ``db`` (``store`` and ``publisher`` inject faults)."""
    from dataclasses import replace

    from flask import Flask, request

    from shared.config import IntakeSettings, get_settings
    from shared.wiring.intake import intake_api, intake_clients

    settings = get_settings(IntakeSettings)
    clients = intake_clients(settings)
    clients = replace(clients, store=store or DeploymentStore(db), publisher=publisher or clients.publisher)
    api = intake_api(settings, clients, clock=clock)
    app = Flask("intake-under-test")
    methods = ["GET", "POST", "PUT", "DELETE"]
    view = lambda **_: api(request)  # noqa: E731
    for rule in ("/", "/<path:_path>"):
        app.add_url_rule(rule, "intake", view, methods=methods)
    return app.test_client()


def test_health_is_503_fast_when_firestore_does_not_answer(
    db: firestore.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default retry would keep trying for ~5 minutes before answering anything.
    import socket

    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{port}")
    unreachable = firestore.Client(project="visgate-local")
    monkeypatch.undo()
    client = _intake(db, DeploymentStore(unreachable))
    started = time.monotonic()
    resp = client.get("/health")
    assert time.monotonic() - started < 10
    assert resp.status_code == 503
    assert resp.json["error"]["code"] == "unavailable"
    _conforms(client.get("/openapi.json").json, "GET", "/health", resp)


class _FailingStore(DeploymentStore):
    """The real store, except that reading a deployment raises ``error``."""

    def __init__(self, db: firestore.Client, error: Exception) -> None:
        super().__init__(db)
        self._error = error

    def get(self, deployment_id: str) -> dict[str, Any] | None:
        raise self._error


@pytest.mark.parametrize(
    "error",
    [
        gexc.ServiceUnavailable("firestore went away"),
        gexc.DeadlineExceeded("too slow"),
        gexc.RetryError("gave up", cause=None),
        gexc.InternalServerError("oops"),
    ],
)
def test_transient_google_errors_are_503(db: firestore.Client, error: Exception) -> None:
    client = _intake(db, _FailingStore(db, error))
    resp = client.get(f"/v1/deployments/{uuid.uuid4().hex}", headers=auth(key()))
    assert resp.status_code == 503
    assert resp.json["error"]["code"] == "unavailable"
    assert resp.headers["Retry-After"] == "2"


def test_anything_else_is_500_in_the_error_shape_and_logged_without_its_text(
    db: firestore.Client, caplog: pytest.LogCaptureFixture
) -> None:
    from shared.logging import JsonFormatter

    canary = "hf_canary_in_an_exception"
    client = _intake(db, _FailingStore(db, RuntimeError(f"bad thing near {canary}")))
    caplog.handler.setFormatter(JsonFormatter())
    resp = client.get(f"/v1/deployments/{uuid.uuid4().hex}", headers=auth(key()))
    assert resp.status_code == 500
    assert resp.mimetype == "application/json"
    assert resp.json["error"]["code"] == "internal"
    assert canary not in resp.get_data(as_text=True)
    logged = [json.loads(line) for line in caplog.text.splitlines() if line.startswith("{")]
    unhandled = [entry for entry in logged if entry["message"].startswith("unhandled RuntimeError")]
    assert unhandled and unhandled[0]["request_id"] == resp.json["error"]["request_id"]
    assert canary not in caplog.text


def _tenant(api_key: str) -> str:
    from shared.config import IntakeSettings, get_settings
    from shared.crypto import tenant_id

    return tenant_id(get_settings(IntakeSettings).tenant_pepper.get_secret_value(), api_key)


def test_an_expired_idempotency_key_starts_afresh(intake_client: Any, db: firestore.Client) -> None:
    from shared.intake.steps import _idempotency_doc_id
    from shared.store import IDEMPOTENCY

    api_key = key()
    headers = {**auth(api_key), "Idempotency-Key": "expiring"}
    first = intake_client.post("/v1/deployments", json={"hf_model_id": "a/b"}, headers=headers)
    assert first.status_code == 202
    # The key's 24 h are over, and Firestore's TTL policy has not removed the record yet.
    record = db.collection(IDEMPOTENCY).document(_idempotency_doc_id(_tenant(api_key), "expiring"))
    record.update({"expires_at": datetime.now(UTC) - timedelta(seconds=1)})

    fresh = intake_client.post("/v1/deployments", json={"hf_model_id": "a/c"}, headers=headers)
    assert fresh.status_code == 202, fresh.json
    assert fresh.json["deployment_id"] != first.json["deployment_id"]
    again = intake_client.post("/v1/deployments", json={"hf_model_id": "a/c"}, headers=headers)
    assert again.json == fresh.json
    assert record.get().to_dict()["expires_at"] > datetime.now(UTC) + timedelta(hours=23)


def test_concurrent_requests_on_an_expired_key_create_exactly_one(
    intake_client_factory: Any, db: firestore.Client
) -> None:
    from shared.intake.steps import _idempotency_doc_id
    from shared.store import IDEMPOTENCY

    api_key = key()
    headers = {**auth(api_key), "Idempotency-Key": "expiring-together"}
    first = intake_client_factory().post("/v1/deployments", json={"hf_model_id": "a/b"}, headers=headers)
    record = db.collection(IDEMPOTENCY).document(_idempotency_doc_id(_tenant(api_key), "expiring-together"))
    record.update({"expires_at": datetime.now(UTC) - timedelta(seconds=1)})
    clients = [intake_client_factory() for _ in range(6)]

    def post(i: int) -> Any:
        return clients[i].post("/v1/deployments", json={"hf_model_id": "a/b"}, headers=headers)

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(post, range(6)))
    # One replaced the expired record (its update_time precondition); the others replay that one's answer.
    assert {r.status_code for r in responses} == {202}
    ids = {r.json["deployment_id"] for r in responses}
    assert len(ids) == 1
    assert ids != {first.json["deployment_id"]}
    assert _count(db, "owner", _tenant(api_key)) == 2


class _SpyStore(DeploymentStore):
    """The real store, remembering which deployments it was asked to create."""

    def __init__(self, db: firestore.Client) -> None:
        super().__init__(db)
        self.created: list[str] = []

    def create(self, new: Any, counter: Any = None, tenant_counts: Any = None) -> None:
        self.created.append(new.document.deployment_id)
        super().create(new, counter, tenant_counts)


def test_a_post_over_the_limit_writes_no_deployment(db: firestore.Client) -> None:
    from shared.intake.ratelimit import current_window
    from shared.server_records import RATE_LIMITS

    clock = _fixed_clock()
    api_key = key()
    window = current_window(_tenant(api_key), 120, now=clock())
    db.collection(RATE_LIMITS).document(window.key).set({"count": 120, "expires_at": window.expires_at})
    store = _SpyStore(db)
    over = _intake(db, store, clock=clock).post("/v1/deployments", json={"hf_model_id": "a/b"}, headers=auth(api_key))
    assert over.status_code == 429
    assert store.created == []  # not written then removed: never written
    assert db.collection(RATE_LIMITS).document(window.key).get().to_dict()["count"] == 121  # the refusal counts


class _FailingPublisher:
    """Publishing fails, as when Pub/Sub is unreachable."""

    def publish(self, topic: str, message: Any, **attributes: str) -> str:
        raise RetryableError(f"publish to {topic} failed")


def test_a_failed_publish_leaves_nothing_without_a_key(db: firestore.Client) -> None:
    api_key = key()
    store = _SpyStore(db)
    client = _intake(db, store, _FailingPublisher())
    assert client.post("/v1/deployments", json={"hf_model_id": "a/b"}, headers=auth(api_key)).status_code == 503
    (written,) = store.created
    assert store.get(written) is None
    assert store.secrets(written) is None


def test_a_failed_publish_keeps_a_keyed_deployment_for_its_replay(
    intake_client: Any, db: firestore.Client, requested: Any
) -> None:
    # A duplicate may have been told 202 for this deployment while its first request was publishing: the
    # deployment must stay, and the replay (which publishes itself) sets it going.
    api_key = key()
    headers = {**auth(api_key), "Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    store = _SpyStore(db)
    failed = _intake(db, store, _FailingPublisher()).post(
        "/v1/deployments", json={"hf_model_id": "a/b"}, headers=headers
    )
    assert failed.status_code == 503
    (written,) = store.created
    assert store.get(written) is not None
    retried = intake_client.post("/v1/deployments", json={"hf_model_id": "a/b"}, headers=headers)
    assert retried.status_code == 202
    assert retried.json["deployment_id"] == written
    assert json.loads(requested(written).data)["deployment_id"] == written


def _requests_line(text: str, route: str, code: int) -> int | None:
    prefix = f'visgate_http_requests_total{{route="{route}",code="{code}"}} '
    counts = [int(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix)]
    return counts[0] if counts else None


def test_request_counts_reach_another_instance_without_a_later_request(db: firestore.Client) -> None:
    from shared.intake.metrics import RequestCounters

    first = RequestCounters(DeploymentStore(db), flush_interval_s=0.2)
    route = f"route_{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        first.record(route, 200)
    first.record(route, 404)
    token = {"Authorization": f"Bearer {os.environ['METRICS_TOKEN']}"}
    # The first instance's timer flushes; nothing calls it again. Each time another instance: one instance renders
    # /metrics at most every 30 s.
    text = eventually(
        lambda: (
            _requests_line(t := _intake(db).get("/metrics", headers=token).get_data(as_text=True), route, 404) and t
        ),
        10,
    )
    assert (_requests_line(text, route, 200), _requests_line(text, route, 404)) == (3, 1)


def test_request_counts_are_flushed_at_exit(db: firestore.Client) -> None:
    import os
    import subprocess
    import sys

    route = f"route_{uuid.uuid4().hex[:8]}"
    program = (
        "from google.cloud import firestore\n"
        "from shared.intake.metrics import RequestCounters\n"
        "from shared.store import DeploymentStore\n"
        "counters = RequestCounters(DeploymentStore(firestore.Client(project='visgate-local')), 3600)\n"
        f"counters.record({route!r}, 202)\n"
    )
    subprocess.run([sys.executable, "-c", program], env=os.environ, check=True, timeout=60)
    assert DeploymentStore(db).request_counts()[f"{route}|202"] == 1


# --- who may call: the key is verified with Runpod before anything is written ---------------------------------------


def _runpod_requests(api_key: str) -> int:
    import requests

    state = requests.get(f"{os.environ['RUNPOD_API_BASE_URL']}/_sim/state", timeout=5).json()
    return next(a["requests"] for a in state["accounts"] if a["api_key"] == api_key)


def test_a_key_runpod_refuses_gets_401_and_nothing_is_written(intake_client: Any, db: firestore.Client) -> None:
    from shared.crypto import tenant_id
    from shared.server_records import RATE_LIMITS

    unknown = f"rp_unknown_{uuid.uuid4().hex}"
    address = {"X-Forwarded-For": f"203.0.113.{uuid.uuid4().int % 200}"}
    resp = intake_client.post(
        "/v1/deployments", json={"hf_model_id": "org/model"}, headers={**auth(unknown), **address}
    )

    assert resp.status_code == 401
    assert resp.json["error"]["code"] == "invalid_api_key"
    assert "WWW-Authenticate" in resp.headers
    tenant = tenant_id(os.environ["TENANT_PEPPER"], unknown)
    assert list(db.collection(DEPLOYMENTS).where(filter=firestore.FieldFilter("owner", "==", tenant)).stream()) == []
    assert not [d.id for d in db.collection(RATE_LIMITS).list_documents() if d.id.startswith(tenant)]


def test_probing_keys_from_one_address_is_bounded_and_good_keys_pass(intake_client: Any) -> None:
    from shared.config import IntakeSettings, get_settings

    limit = get_settings(IntakeSettings).refused_keys_per_address_per_minute
    address = {"X-Forwarded-For": f"198.51.100.7, 192.0.2.{uuid.uuid4().int % 250}"}  # the last entry counts
    good = key()
    assert intake_client.get("/v1/deployments", headers={**auth(good), **address}).status_code == 200

    answers = [
        intake_client.get("/v1/deployments", headers={**auth(f"rp_probe_{uuid.uuid4().hex}"), **address}).status_code
        for _ in range(limit + 2)
    ]

    assert answers[:limit] == [401] * limit
    assert answers[limit:] == [429, 429]
    assert intake_client.get("/v1/deployments", headers={**auth(good), **address}).status_code == 200


def test_a_verified_tenant_is_not_checked_with_runpod_again(intake_client: Any) -> None:
    api_key = key()
    for _ in range(3):
        assert intake_client.get("/v1/deployments", headers=auth(api_key)).status_code == 200

    assert _runpod_requests(api_key) == 1


@pytest.mark.parametrize("path", ["/v1/deployments%0A", "/v1/%0Adeployments/x", "/%0D%0A", "/v1/deployments/\x7f"])
def test_a_path_with_a_control_character_is_answered_in_the_error_shape(intake_client: Any, path: str) -> None:
    resp = intake_client.get(path, headers=auth(key()))

    assert resp.status_code == 404
    assert resp.mimetype == "application/json"
    assert resp.json["error"]["code"] == "not_found"

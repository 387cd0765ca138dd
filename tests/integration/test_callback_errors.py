"""The callback function when Firestore or S3 fail: the one error shape (503 when a retry may fix it, else 500),
logged inside the deployment's binding, never with the exception's text."""

from __future__ import annotations

import dataclasses
import importlib
import json
import uuid
from types import ModuleType
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from flask import Flask, Response, request
from google.api_core import exceptions as gexc
from google.cloud import firestore

from shared.logging import JsonFormatter
from shared.signing import new_secret, sign_headers
from shared.store import DeploymentStore

CANARY = "hf_canary_in_an_exception"


class _FailingStore(DeploymentStore):
    """The real store, except that reading a deployment's secrets raises ``error``."""

    def __init__(self, db: firestore.Client, error: Exception) -> None:
        super().__init__(db)
        self._error = error

    def secrets(self, deployment_id: str) -> dict[str, Any] | None:
        raise self._error


@pytest.fixture
def callback_main(intake_env: None, tasks_emulator: str) -> ModuleType:
    return importlib.import_module("functions.callback.main")


def _post(callback_main: ModuleType, deployment_id: str) -> Response:
    raw = json.dumps({"schema_version": 1, "phase": "loading_model"}).encode()
    headers = {"Content-Type": "application/json", **sign_headers(new_secret(), raw)}
    path = f"/v1/deployments/{deployment_id}/phase"
    with Flask("callback-under-test").test_request_context(path, method="POST", data=raw, headers=headers):
        return callback_main.callback(request)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "case",
    [
        (gexc.ServiceUnavailable(f"firestore went away near {CANARY}"), 503, "unavailable"),
        (EndpointConnectionError(endpoint_url=f"http://s3.invalid/{CANARY}"), 503, "unavailable"),
        (
            ClientError({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "GetObject"),
            503,
            "unavailable",
        ),
        (
            ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "GetObject"),
            500,
            "internal",
        ),
        (RuntimeError(f"bad thing near {CANARY}"), 500, "internal"),
    ],
)
def test_a_failing_dependency_is_answered_in_the_error_shape_and_logged_with_the_deployment(
    db: firestore.Client,
    callback_main: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    case: tuple[Exception, int, str],
) -> None:
    error, status, code = case
    failing = dataclasses.replace(callback_main.api._deps, store=_FailingStore(db, error))
    monkeypatch.setattr(callback_main.api, "_deps", failing)
    caplog.handler.setFormatter(JsonFormatter())
    deployment_id = uuid.uuid4().hex

    resp = _post(callback_main, deployment_id)

    assert resp.status_code == status
    assert resp.mimetype == "application/json"
    assert json.loads(resp.get_data())["error"]["code"] == code
    logged = [json.loads(line) for line in caplog.text.splitlines() if line.startswith("{")]
    problems = [entry for entry in logged if entry["severity"] in {"WARNING", "ERROR"}]
    assert problems
    assert all(entry["deployment_id"] == deployment_id for entry in problems)
    assert type(error).__name__ in problems[0]["message"]
    assert CANARY not in caplog.text


# --- what an unauthenticated caller can make the callback read (issue 18, point 13) ---------------------------------


class _CountingStore(DeploymentStore):
    """The real store, counting reads of deployment secrets."""

    def __init__(self, db: firestore.Client) -> None:
        super().__init__(db)
        self.secret_reads = 0

    def secrets(self, deployment_id: str) -> dict[str, Any] | None:
        self.secret_reads += 1
        return super().secrets(deployment_id)


class _UnreadableStream:
    """A request body that must never be read."""

    def read(self, *_args: Any) -> bytes:
        raise AssertionError("the body was read")


def _raw_post(callback_main: ModuleType, path: str, stream: Any, length: int | None) -> Response:
    """POST with a body stream of our own and a Content-Length that need not match it."""
    from flask import Request
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(path=path, method="POST", headers={"Content-Type": "application/json"}).get_environ()
    environ["wsgi.input"] = stream
    environ.pop("CONTENT_LENGTH", None)
    if length is not None:
        environ["CONTENT_LENGTH"] = str(length)
    else:  # chunked: the server terminates the stream, so the app may read it to its end
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        environ["wsgi.input_terminated"] = True
    with Flask("callback-under-test").app_context():
        return callback_main.api(Request(environ))  # type: ignore[no-any-return]


@pytest.mark.parametrize("route", ["phase", "cache-grant"])
def test_a_body_over_64_kib_is_refused_before_it_is_read(
    db: firestore.Client, callback_main: ModuleType, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    import io

    counting = _CountingStore(db)
    monkeypatch.setattr(callback_main.api, "_deps", dataclasses.replace(callback_main.api._deps, store=counting))
    path = f"/v1/deployments/{uuid.uuid4().hex}/{route}"

    resp = _raw_post(callback_main, path, _UnreadableStream(), 30 * 1024 * 1024)

    assert resp.status_code == 413
    assert json.loads(resp.get_data())["error"]["code"] == "payload_too_large"
    assert counting.secret_reads == 0
    # Without a Content-Length (chunked), no more than the cap plus one byte is read.
    stream = io.BytesIO(b"{" + b" " * (1024 * 1024) + b"}")
    assert _raw_post(callback_main, path, stream, None).status_code == 413
    assert stream.tell() == 64 * 1024 + 1
    assert counting.secret_reads == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},  # unsigned
        {"webhook-id": "msg_1", "webhook-timestamp": "1", "webhook-signature": "v1,abc"},  # long expired
        {"webhook-id": "msg_1", "webhook-timestamp": "soon", "webhook-signature": "v1,abc"},
    ],
)
def test_an_unsigned_or_stale_report_is_refused_without_reading_secrets(
    db: firestore.Client, callback_main: ModuleType, monkeypatch: pytest.MonkeyPatch, headers: dict[str, str]
) -> None:
    counting = _CountingStore(db)
    monkeypatch.setattr(callback_main.api, "_deps", dataclasses.replace(callback_main.api._deps, store=counting))
    raw = json.dumps({"schema_version": 1, "phase": "loading_model"}).encode()
    path = f"/v1/deployments/{uuid.uuid4().hex}/phase"
    with Flask("callback-under-test").test_request_context(
        path, method="POST", data=raw, headers={"Content-Type": "application/json", **headers}
    ):
        resp = callback_main.callback(request)

    assert resp.status_code == 401
    assert json.loads(resp.get_data())["error"]["code"] == "invalid_signature"
    assert counting.secret_reads == 0


def test_a_job_ended_call_is_authenticated_before_its_body_is_read(callback_main: ModuleType) -> None:
    path = f"/v1/deployments/{uuid.uuid4().hex}/job-ended?token=forged"
    resp = _raw_post(callback_main, path, _UnreadableStream(), 10)
    assert resp.status_code == 401
    assert json.loads(resp.get_data())["error"]["code"] == "invalid_signature"

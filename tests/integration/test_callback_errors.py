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

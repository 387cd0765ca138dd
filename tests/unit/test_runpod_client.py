"""The Runpod client: variables (never interpolation), and the mapping of failures onto retry semantics."""

from __future__ import annotations

import json

import pytest
import requests
import responses

from shared.errors import PermanentError, RetryableError
from shared.runpod.client import EndpointSpec, RunpodClient, RunpodConnector, TemplateSpec
from shared.runpod.errors import (
    RunpodAuthError,
    RunpodNameTakenError,
    RunpodNotFoundError,
    RunpodQuotaError,
    RunpodUnavailableError,
    classify_graphql_error,
)

BASE = "http://runpod.test"
KEY = "rpa_secret_key_value"


def _client() -> RunpodClient:
    return RunpodConnector(BASE, BASE, timeout_s=1).client(KEY)


@responses.activate
def test_values_travel_as_variables_with_bearer_auth() -> None:
    responses.post(f"{BASE}/graphql", json={"data": {"saveTemplate": {"id": "t1", "name": "visgate-x"}}})
    hostile = 'x" } mutation { deleteEndpoint(id: "other") } #'
    spec = TemplateSpec(name="visgate-x", imageName="img@sha256:" + "0" * 64, env={"A": hostile}, containerDiskInGb=5)

    template = _client().save_template(spec)

    assert template.id == "t1"
    sent = json.loads(responses.calls[0].request.body)
    assert hostile not in sent["query"]
    assert sent["variables"]["input"]["env"] == [{"key": "A", "value": hostile}]
    assert sent["variables"]["input"]["isServerless"] is True
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {KEY}"


@responses.activate
def test_endpoint_update_sends_the_whole_config_with_its_id() -> None:
    responses.post(f"{BASE}/graphql", json={"data": {"saveEndpoint": {"id": "e1", "name": "n", "templateId": "t"}}})
    spec = EndpointSpec(
        name="n",
        templateId="t",
        gpuIds="AMPERE_16,AMPERE_24",
        workersMin=0,
        workersMax=1,
        idleTimeout=5,
        scalerType="QUEUE_DELAY",
        scalerValue=4,
    )

    _client().save_endpoint(spec, "e1")

    sent = json.loads(responses.calls[0].request.body)["variables"]["input"]
    assert sent["id"] == "e1"
    assert sent["gpuIds"] == "AMPERE_16,AMPERE_24"
    assert sent["flashBootType"] == "FLASHBOOT"
    assert {"workersMin", "workersMax", "idleTimeout", "scalerType", "scalerValue", "templateId"} <= set(sent)


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, RunpodAuthError), (403, RunpodAuthError), (429, RunpodUnavailableError), (502, RunpodUnavailableError)],
)
@responses.activate
def test_http_statuses_map_to_retry_semantics(status: int, error: type[Exception]) -> None:
    responses.post(f"{BASE}/graphql", status=status, body="nope")

    with pytest.raises(error) as caught:
        _client().gpu_types()

    assert KEY not in str(caught.value)


@responses.activate
def test_connection_errors_are_retryable_and_never_show_the_key() -> None:
    responses.get(f"{BASE}/v2/e1/health", body=requests.ConnectionError(f"refused {KEY}"))

    with pytest.raises(RetryableError) as caught:
        _client().health("e1")

    assert KEY not in str(caught.value)


@responses.activate
def test_data_plane_404_is_not_found_and_health_parses() -> None:
    responses.get(f"{BASE}/v2/gone/health", status=404, json={"error": "endpoint not found"})
    responses.get(
        f"{BASE}/v2/e1/health",
        json={"jobs": {"inQueue": 1}, "workers": {"throttled": 2, "initializing": 1}},
    )

    with pytest.raises(RunpodNotFoundError):
        _client().health("gone")
    health = _client().health("e1")
    assert (health.jobs.in_queue, health.workers.throttled, health.workers.up) == (1, 2, 1)


@pytest.mark.parametrize(
    ("message", "kind", "reason"),
    [
        ("Template name must be unique", RunpodNameTakenError, None),
        ("Endpoint not found", RunpodNotFoundError, "runpod_resource_missing"),
        ("Template not found", RunpodNotFoundError, "runpod_resource_missing"),
        ("You have reached the maximum number of endpoints", RunpodQuotaError, "quota_exceeded"),
        ("Unauthorized", RunpodAuthError, "auth_failed"),
        ("Endpoint cannot be deleted while it has workers", RunpodUnavailableError, None),
        ("Template is in use by endpoint(s): x", RunpodUnavailableError, None),
        ("gpuIds must name at least one GPU pool", PermanentError, "internal"),
    ],
)
def test_graphql_errors_are_classified_by_message(message: str, kind: type[Exception], reason: str | None) -> None:
    error = classify_graphql_error(message)

    assert isinstance(error, kind)
    if reason is not None:
        assert isinstance(error, PermanentError)
        assert error.reason == reason


@responses.activate
def test_graphql_errors_in_a_200_answer_raise() -> None:
    responses.post(f"{BASE}/graphql", json={"errors": [{"message": "Endpoint name must be unique"}], "data": None})

    with pytest.raises(RunpodNameTakenError):
        _client().resources()

"""The simulator's v2 control plane against Runpod's own OpenAPI document (``../shared/runpod/openapi-v2.json``).

Every ``runpod_sim`` test already has its control-plane exchanges checked when the document is present; this test
drives every route and refusal we simulate in one go, and is the one that says so (skips, naming where the document
comes from) when it is absent.
"""

from __future__ import annotations

import pytest

from simulators.runpod import openapi_contract
from simulators.runpod.openapi_contract import Contract, ContractError
from tests.simulators.conftest import RunpodSimClient
from tests.support.runpod_contract import contract_violations
from tests.support.waiting import eventually


def test_every_route_and_refusal_matches_runpods_openapi_document(
    runpod_contract: Contract, runpod_sim: RunpodSimClient
) -> None:
    call = runpod_sim.v2
    created = call("POST", "serverless", json=runpod_sim.create_body(workers={"min": 1, "max": 2}, env={"A": "1"}))
    endpoint_id = created.json()["id"]
    call("POST", "serverless", json=runpod_sim.create_body(scaling={"type": "REQUEST_COUNT", "requestCount": 1}))
    eventually(lambda: runpod_sim.workers(endpoint_id)["summary"]["idle"] == 1)
    runpod_sim.scenario(capacity={"ADA_24": 1})
    call("PATCH", f"serverless/{endpoint_id}", json={"workers": {"min": 2}})
    eventually(lambda: runpod_sim.workers(endpoint_id)["summary"]["throttled"] == 1)
    call("GET", "serverless")
    call("GET", f"serverless/{endpoint_id}")
    call("PATCH", f"serverless/{endpoint_id}", json={"gpu": {"pools": ["AMPERE_24"], "excludedTypes": ["NVIDIA L4"]}})
    call("GET", "catalog/gpus")
    call("GET", "catalog/gpus", params={"include": "AVAILABILITY", "product": "SERVERLESS,POD", "count": 2})
    # Refusals: 400 unknown field, 422 schema, 404, 401, 429, 500, 400 refusal, 400 catalog query.
    call("POST", "serverless", json=runpod_sim.create_body(bogus=True))
    call("POST", "serverless", json=runpod_sim.create_body(flashboot="ON"))
    call("PATCH", "serverless/nosuch", json={"name": "x"})
    call("GET", "serverless", api_key="rpa_wrong")
    runpod_sim.scenario(rate_limit=1, api_errors=1, api_refusals=1)
    for _ in range(3):
        call("GET", f"serverless/{endpoint_id}/workers")
    call("GET", "catalog/gpus", params={"product": "SERVERLESS"})
    call("DELETE", f"serverless/{endpoint_id}")
    call("DELETE", f"serverless/{endpoint_id}")

    exchanges = runpod_sim.app.exchanges or []
    statuses = sorted({status for *_, status, _, _ in exchanges})
    assert statuses == [200, 201, 204, 400, 401, 404, 422, 429, 500]
    assert contract_violations(exchanges) == []


def test_the_contract_catches_what_runpod_refuses(runpod_contract: Contract) -> None:
    body = {"name": "x", "image": "i", "type": "QUEUE", "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4}}
    body["gpu"] = {"pools": ["ADA_24"]}

    runpod_contract.validate_request("POST", "/v2/serverless", body)
    with pytest.raises(ContractError, match="bogus"):
        runpod_contract.validate_request("POST", "/v2/serverless", body | {"bogus": 1})
    with pytest.raises(ContractError, match="createdAt"):
        runpod_contract.validate_response("GET", "/v2/serverless/{id}", 200, {"id": "x"})
    with pytest.raises(ContractError, match="count"):
        runpod_contract.validate_request("GET", "/v2/catalog/gpus", None, "include=AVAILABILITY&count=0")
    runpod_contract.validate_response("DELETE", "/v2/serverless/{id}", 204, None)
    assert runpod_contract.path_template("/v2/serverless/abc/workers") == "/v2/serverless/{id}/workers"


def test_a_missing_document_is_reported_with_where_it_comes_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(openapi_contract.ENV_VAR, "/nonexistent/openapi-v2.json")

    reason = openapi_contract.missing_reason()

    assert reason is not None
    assert "/nonexistent/openapi-v2.json" in reason
    assert "runpod/docs" in reason
    assert "../shared/runpod/openapi-v2.json" in reason

"""The Runpod simulator's GraphQL control plane, spoken with plain requests and with the runpod SDK's own documents."""

from __future__ import annotations

import uuid

import pytest
import requests

from simulators.runpod.catalog import SERVERLESS_POOLS, gpu_types_in_pool
from tests.simulators.conftest import SAVE_ENDPOINT, SAVE_TEMPLATE, RunpodSimClient

MYSELF = """
fragment EndpointFields on Endpoint { id name templateId gpuIds workersMin workersMax idleTimeout scalerType }
query Mine {
  me: myself {
    id
    endpoints { ...EndpointFields scalerValue flashBootType env { key value } }
    podTemplates { id name imageName isServerless env { key value } }
  }
}
"""
DELETE_ENDPOINT = "mutation Delete($id: String) { deleteEndpoint(id: $id) }"
DELETE_TEMPLATE = "mutation Delete($name: String) { deleteTemplate(templateName: $name) }"


def errors_of(response: requests.Response) -> list[str]:
    """The GraphQL error messages of a 200 answer."""
    assert response.status_code == 200, response.text
    return [error["message"] for error in response.json().get("errors", [])]


def test_create_template_and_endpoint_with_variables_then_list_them(runpod_sim: RunpodSimClient) -> None:
    env = {"VISGATE_DEPLOYMENT_ID": "dep_1", "TRICKY": 'quote " and \\ backslash'}
    template_id, endpoint_id = runpod_sim.create_endpoint(
        env=env, name="visgate-dep1", gpuIds="ADA_24,AMPERE_48", workersMax=2, idleTimeout=30
    )

    mine = runpod_sim.graphql(MYSELF).json()["data"]["me"]

    assert mine["podTemplates"] == [
        {
            "id": template_id,
            "name": "visgate-dep1",
            "imageName": "visgate/worker@sha256:" + "0" * 64,
            "isServerless": True,
            "env": [{"key": k, "value": v} for k, v in env.items()],
        }
    ]
    (endpoint,) = mine["endpoints"]
    assert endpoint["id"] == endpoint_id
    assert endpoint["templateId"] == template_id
    assert endpoint["gpuIds"] == "ADA_24,AMPERE_48"
    assert (endpoint["workersMin"], endpoint["workersMax"], endpoint["idleTimeout"]) == (0, 2, 30)
    assert (endpoint["scalerType"], endpoint["scalerValue"], endpoint["flashBootType"]) == ("QUEUE_DELAY", 4, "OFF")
    assert endpoint["env"] == mine["podTemplates"][0]["env"]


def test_names_are_unique_per_account(runpod_sim: RunpodSimClient) -> None:
    template_id, _ = runpod_sim.create_endpoint(name="visgate-same")

    again = {"name": "visgate-same", "imageName": "img", "isServerless": True}
    assert errors_of(runpod_sim.graphql(SAVE_TEMPLATE, {"input": again})) == ["Template name must be unique"]
    endpoint = {"name": "visgate-same", "templateId": template_id, "gpuIds": "AMPERE_16"}
    assert errors_of(runpod_sim.graphql(SAVE_ENDPOINT, {"input": endpoint})) == ["Endpoint name must be unique"]

    other_key = f"rpa_{uuid.uuid4().hex}"
    requests.post(f"{runpod_sim.url}/_sim/accounts", json={"api_key": other_key}, timeout=5).raise_for_status()
    other = runpod_sim.graphql(SAVE_TEMPLATE, {"input": again}, api_key=other_key)
    assert errors_of(other) == []
    assert runpod_sim.graphql(MYSELF, api_key=other_key).json()["data"]["me"]["endpoints"] == []


def test_save_endpoint_update_replaces_the_whole_config(runpod_sim: RunpodSimClient) -> None:
    template_id, endpoint_id = runpod_sim.create_endpoint(
        name="visgate-upd",
        workersMax=5,
        idleTimeout=60,
        scalerType="REQUEST_COUNT",
        scalerValue=2,
        flashBootType="FLASHBOOT",
    )

    update = {"id": endpoint_id, "name": "visgate-upd", "templateId": template_id, "gpuIds": "AMPERE_80"}
    updated = runpod_sim.graphql(SAVE_ENDPOINT, {"input": update}).json()["data"]["saveEndpoint"]

    assert updated["id"] == endpoint_id
    assert updated["gpuIds"] == "AMPERE_80"
    # Omitted fields go back to Runpod's defaults.
    assert (updated["workersMax"], updated["idleTimeout"], updated["scalerType"]) == (3, 5, "QUEUE_DELAY")
    assert (updated["scalerValue"], updated["flashBootType"]) == (4, "OFF")


def test_flashboot_by_type_or_by_the_sdk_name_suffix(runpod_sim: RunpodSimClient) -> None:
    template_id, _ = runpod_sim.create_endpoint(name="visgate-fb-type", flashBootType="FLASHBOOT")
    by_suffix = {"name": "visgate-x-fb", "templateId": template_id, "gpuIds": "ADA_24"}

    created = runpod_sim.graphql(SAVE_ENDPOINT, {"input": by_suffix}).json()["data"]["saveEndpoint"]

    assert created["flashBootType"] == "FLASHBOOT"
    flags = {e["name"]: e["flashBootType"] for e in runpod_sim.graphql(MYSELF).json()["data"]["me"]["endpoints"]}
    assert flags == {"visgate-fb-type": "FLASHBOOT", "visgate-x-fb": "FLASHBOOT"}


def test_delete_endpoint_is_refused_until_scaled_to_zero(runpod_sim: RunpodSimClient) -> None:
    template_id, endpoint_id = runpod_sim.create_endpoint(name="visgate-del", workersMin=0, workersMax=1)

    (refused,) = errors_of(runpod_sim.graphql(DELETE_ENDPOINT, {"id": endpoint_id}))
    assert "workersMin and workersMax to 0" in refused
    (in_use,) = errors_of(runpod_sim.graphql(DELETE_TEMPLATE, {"name": "visgate-del"}))
    assert "in use" in in_use

    scale = {"id": endpoint_id, "name": "visgate-del", "templateId": template_id, "gpuIds": "ADA_24"}
    scale |= {"workersMin": 0, "workersMax": 0}
    assert errors_of(runpod_sim.graphql(SAVE_ENDPOINT, {"input": scale})) == []
    deleted = runpod_sim.graphql(DELETE_ENDPOINT, {"id": endpoint_id})
    assert deleted.json() == {"data": {"deleteEndpoint": None}}
    assert runpod_sim.graphql(DELETE_TEMPLATE, {"name": "visgate-del"}).json() == {"data": {"deleteTemplate": None}}

    mine = runpod_sim.graphql(MYSELF).json()["data"]["me"]
    assert (mine["endpoints"], mine["podTemplates"]) == ([], [])
    assert errors_of(runpod_sim.graphql(DELETE_ENDPOINT, {"id": endpoint_id})) == ["Endpoint not found"]
    assert errors_of(runpod_sim.graphql(DELETE_TEMPLATE, {"name": "visgate-del"})) == ["Template not found"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"gpuIds": "NOT_A_POOL"}, "Unknown GPU pool in gpuIds: NOT_A_POOL"),
        ({"gpuIds": ""}, "gpuIds must name at least one GPU pool"),
        ({"workersMin": 2, "workersMax": 1}, "workersMin cannot be greater than workersMax"),
        ({"templateId": "nope"}, "Template not found"),
    ],
)
def test_save_endpoint_refuses_bad_input(runpod_sim: RunpodSimClient, fields: dict, message: str) -> None:
    template_id, _ = runpod_sim.create_endpoint()
    endpoint = {"name": f"visgate-{uuid.uuid4().hex[:8]}", "templateId": template_id, "gpuIds": "ADA_24", **fields}

    assert errors_of(runpod_sim.graphql(SAVE_ENDPOINT, {"input": endpoint})) == [message]


def test_endpoints_need_a_serverless_template(runpod_sim: RunpodSimClient) -> None:
    pod = runpod_sim.graphql(SAVE_TEMPLATE, {"input": {"name": "pod-tpl", "imageName": "img"}})
    template_id = pod.json()["data"]["saveTemplate"]["id"]
    endpoint = {"name": "visgate-pod", "templateId": template_id, "gpuIds": "ADA_24"}

    assert errors_of(runpod_sim.graphql(SAVE_ENDPOINT, {"input": endpoint})) == [
        "Template is not a serverless template"
    ]


def test_gpu_types_cover_every_pool_with_prices(runpod_sim: RunpodSimClient) -> None:
    query = """
    query Gpus($count: Int) {
      gpuTypes { id displayName memoryInGb secureCloud communityCloud
                 lowestPrice(input: {gpuCount: $count}) { minimumBidPrice uninterruptablePrice } }
    }
    """
    gpus = {g["id"]: g for g in runpod_sim.graphql(query, {"count": 1}).json()["data"]["gpuTypes"]}

    for pool in SERVERLESS_POOLS:
        members = gpu_types_in_pool(pool.id)
        assert members, pool.id
        for gpu in members:
            assert gpus[gpu.id]["memoryInGb"] >= pool.memory_in_gb
            price = gpus[gpu.id]["lowestPrice"]
            assert 0 < price["minimumBidPrice"] < price["uninterruptablePrice"]
    one = runpod_sim.graphql('{ gpuTypes(input: {id: "NVIDIA H200"}) { id memoryInGb } }').json()
    assert one == {"data": {"gpuTypes": [{"id": "NVIDIA H200", "memoryInGb": 141}]}}


def test_auth_bad_or_missing_key_is_401_and_query_param_key_works(runpod_sim: RunpodSimClient) -> None:
    url = f"{runpod_sim.url}/graphql"
    body = {"query": "{ myself { id } }"}

    assert runpod_sim.graphql("{ myself { id } }", api_key="rpa_wrong").status_code == 401
    assert requests.post(url, json=body, timeout=5).status_code == 401
    by_param = requests.post(url, params={"api_key": runpod_sim.api_key}, json=body, timeout=5)
    assert by_param.status_code == 200
    assert by_param.json()["data"]["myself"]["id"].startswith("user_")


def test_scenario_forces_429_with_retry_after_then_500_then_recovers(runpod_sim: RunpodSimClient) -> None:
    runpod_sim.scenario(rate_limit=1, graphql_errors=1)

    limited = runpod_sim.graphql("{ myself { id } }")
    failed = runpod_sim.graphql("{ myself { id } }")
    fine = runpod_sim.graphql("{ myself { id } }")

    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert failed.status_code == 500
    assert failed.json()["errors"]
    assert fine.status_code == 200


def test_documents_that_do_not_validate_are_400(runpod_sim: RunpodSimClient) -> None:
    response = runpod_sim.graphql("{ myself { noSuchField } }")

    assert response.status_code == 400
    assert "noSuchField" in response.json()["errors"][0]["message"]


def test_runpod_sdk_documents_work_unmodified(runpod_sim: RunpodSimClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from runpod.api import ctl_commands

    monkeypatch.setenv("RUNPOD_API_BASE_URL", runpod_sim.url)
    monkeypatch.setattr("runpod.api_key", runpod_sim.api_key)

    template = ctl_commands.create_template("sdk-tpl", "img:latest", env={"A": "1"}, is_serverless=True)
    endpoint = ctl_commands.create_endpoint("sdk-ep", template["id"], gpu_ids="AMPERE_24", flashboot=True)
    listed = ctl_commands.get_endpoints()
    gpu = ctl_commands.get_gpu("NVIDIA GeForce RTX 4090")

    assert template["env"] == [{"key": "A", "value": "1"}]
    assert endpoint["flashBootType"] == "FLASHBOOT"
    assert [e["id"] for e in listed] == [endpoint["id"]]
    assert gpu["memoryInGb"] == 24


def test_scenario_allows_duplicate_endpoint_names_like_real_runpod(runpod_sim: RunpodSimClient) -> None:
    template_id, first = runpod_sim.create_endpoint(name="visgate-twice")
    runpod_sim.scenario(duplicate_endpoint_names=True)

    endpoint = {"name": "visgate-twice", "templateId": template_id, "gpuIds": "AMPERE_16"}
    second = runpod_sim.graphql(SAVE_ENDPOINT, {"input": endpoint}).json()["data"]["saveEndpoint"]["id"]

    assert second != first
    assert sorted(e["name"] for e in runpod_sim.state()["endpoints"]) == ["visgate-twice", "visgate-twice"]
    again = {"name": "visgate-twice", "imageName": "img", "isServerless": True}
    assert errors_of(runpod_sim.graphql(SAVE_TEMPLATE, {"input": again})) == ["Template name must be unique"]


def test_requests_are_counted_per_account_on_both_planes(runpod_sim: RunpodSimClient) -> None:
    other_key = f"rpa_{uuid.uuid4().hex}"
    requests.post(f"{runpod_sim.url}/_sim/accounts", json={"api_key": other_key}, timeout=5).raise_for_status()
    assert runpod_sim.state()["requests"] == 0

    _, endpoint_id = runpod_sim.create_endpoint()  # two GraphQL calls
    runpod_sim.scenario(rate_limit=1)
    assert runpod_sim.graphql("{ myself { id } }").status_code == 429  # refused, but made with the key
    assert runpod_sim.v2("GET", f"{endpoint_id}/health").status_code == 200
    assert runpod_sim.graphql("{ myself { id } }", api_key="rpa_unregistered").status_code == 401

    assert runpod_sim.state()["requests"] == 4
    other = next(
        a
        for a in requests.get(f"{runpod_sim.url}/_sim/state", timeout=5).json()["accounts"]
        if a["api_key"] == other_key
    )
    assert other["requests"] == 0

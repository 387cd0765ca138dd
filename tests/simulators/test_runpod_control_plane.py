"""The Runpod simulator's REST v2 control plane (``/v2/serverless``, ``/v2/catalog/gpus``), spoken with plain HTTP."""

from __future__ import annotations

import uuid

import pytest
import requests

from simulators.runpod.catalog import SERVERLESS_POOLS, gpu_types_in_pool
from tests.simulators.conftest import IMAGE, RunpodSimClient
from tests.support.waiting import eventually


def problem_of(response: requests.Response, status: int) -> dict:
    """The problem+json body of a refusal, checked to have Runpod's ``ErrorResponse`` shape."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    return dict(body)


def test_create_answers_the_endpoint_then_get_and_list_show_it(runpod_sim: RunpodSimClient) -> None:
    env = {"VISGATE_DEPLOYMENT_ID": "dep_1", "TRICKY": 'quote " and \\ backslash'}
    body = runpod_sim.create_body(env=env, pools=("ADA_24", "AMPERE_48"), workers={"max": 2, "idleTimeout": 30})

    created = runpod_sim.v2("POST", "serverless", json=body)

    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert endpoint["name"] == body["name"]
    assert (endpoint["image"], endpoint["env"], endpoint["type"]) == (IMAGE, env, "QUEUE")
    assert endpoint["gpu"] == {
        "pools": ["ADA_24", "AMPERE_48"],
        "count": 1,
        "allowedCudaVersions": [],
        "minCudaVersion": None,
    }
    assert endpoint["workers"] == {"min": 0, "max": 2, "idleTimeout": 30}
    assert endpoint["scaling"] == {"type": "QUEUE_DELAY", "queueDelay": 4}
    assert (endpoint["flashboot"], endpoint["timeout"]) == ("OFF", 300_000)
    assert endpoint["requestUrls"]["run"] == f"{runpod_sim.url}/v2/{endpoint['id']}/run"
    assert created.headers["RateLimit-Policy"].startswith('"minute";q=')
    assert runpod_sim.v2("GET", f"serverless/{endpoint['id']}").json() == endpoint
    assert runpod_sim.v2("GET", "serverless").json() == {"endpoints": [endpoint]}


def test_create_defaults_follow_the_schema(runpod_sim: RunpodSimClient) -> None:
    body = {"name": "visgate-min", "image": IMAGE, "type": "QUEUE", "gpu": {"pools": ["AMPERE_16"]}}
    body["scaling"] = {"type": "REQUEST_COUNT", "requestCount": 2}

    endpoint = runpod_sim.v2("POST", "serverless", json=body).json()

    # idleTimeout does not apply to REQUEST_COUNT scaling on a queue endpoint: Runpod omits it.
    assert endpoint["workers"] == {"min": 0, "max": 3}
    assert endpoint["scaling"] == {"type": "REQUEST_COUNT", "requestCount": 2}
    assert (endpoint["env"], endpoint["ports"], endpoint["dataCenterIds"], endpoint["networkVolumes"]) == (
        {},
        [],
        [],
        [],
    )


def test_duplicate_names_are_accepted_and_other_accounts_see_nothing(runpod_sim: RunpodSimClient) -> None:
    first = runpod_sim.create_endpoint(name="visgate-same")
    second = runpod_sim.create_endpoint(name="visgate-same")
    other_key = f"rpa_{uuid.uuid4().hex}"
    requests.post(f"{runpod_sim.url}/_sim/accounts", json={"api_key": other_key}, timeout=5).raise_for_status()

    assert first != second
    assert [e["name"] for e in runpod_sim.v2("GET", "serverless").json()["endpoints"]] == ["visgate-same"] * 2
    assert runpod_sim.v2("GET", "serverless", api_key=other_key).json() == {"endpoints": []}
    for method in ("GET", "PATCH", "DELETE"):
        kwargs = {"json": {"name": "mine"}} if method == "PATCH" else {}
        problem_of(runpod_sim.v2(method, f"serverless/{first}", api_key=other_key, **kwargs), 404)
    problem_of(runpod_sim.v2("GET", f"serverless/{first}/workers", api_key=other_key), 404)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"bogus": 1}, "$: additional properties 'bogus' not allowed"),
        ({"gpu": {"pools": ["ADA_24"], "gpuIds": "ADA_24"}}, "$.gpu: additional properties 'gpuIds' not allowed"),
        ({"workers": {"max": 1, "workersMax": 1}}, "$.workers: additional properties 'workersMax' not allowed"),
    ],
)
def test_unknown_fields_are_refused_by_name_with_400(runpod_sim: RunpodSimClient, change: dict, error: str) -> None:
    response = runpod_sim.v2("POST", "serverless", json=runpod_sim.create_body() | change)

    assert problem_of(response, 400)["errors"] == [error]
    assert runpod_sim.state()["endpoints"] == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "$.name"),
        ({"type": "SERVERLESS"}, "$.type"),
        ({"flashboot": "ON"}, "$.flashboot"),
        ({"workers": {"min": -1}}, "$.workers.min"),
        ({"workers": {"idleTimeout": 3601}}, "$.workers.idleTimeout"),
        ({"scaling": {"type": "QUEUE_DELAY", "queueDelay": 0.1}}, "$.scaling.queueDelay"),
        ({"scaling": {"type": "REQUEST_COUNT"}}, "$.scaling"),
        ({"gpu": {"pools": []}}, "$.gpu.pools"),
        ({"gpu": {"pools": ["ADA_24"], "count": 0}}, "$.gpu.count"),
        ({"disk": 0}, "$.disk"),
        ({"env": {"A": 1}}, "$.env.A"),
        ({"timeout": "300000"}, "$.timeout"),
    ],
)
def test_schema_violations_are_422_naming_the_field(runpod_sim: RunpodSimClient, change: dict, field: str) -> None:
    response = runpod_sim.v2("POST", "serverless", json=runpod_sim.create_body() | change)

    errors = problem_of(response, 422)["errors"]
    assert any(e.startswith(f"{field}:") for e in errors), errors


@pytest.mark.parametrize("missing", ["name", "type", "scaling", "image"])
def test_required_fields_are_enforced(runpod_sim: RunpodSimClient, missing: str) -> None:
    body = runpod_sim.create_body()
    del body[missing]

    errors = problem_of(runpod_sim.v2("POST", "serverless", json=body), 422)["errors"]

    assert errors == [f"$: '{missing}' is a required property"]


@pytest.mark.parametrize(
    ("change", "status", "fragment"),
    [
        ({"gpu": {"pools": ["NOT_A_POOL"]}}, 400, "unknown serverless GPU pool 'NOT_A_POOL'"),
        ({"gpu": {"pools": ["ADA_24"], "excludedTypes": ["NVIDIA L40"]}}, 400, "not a GPU type in one of pools"),
        ({"gpu": {"pools": ["ADA_24"], "excludedTypes": ["NVIDIA GeForce RTX 4090"]}}, 400, "leaves no GPU type"),
        ({"workers": {"min": 2, "max": 1}}, 400, "min must not be greater than max"),
        ({"gpu": {"pools": ["ADA_24"], "allowedCudaVersions": ["12.8"], "minCudaVersion": "12.1"}}, 400, "exclusive"),
        ({"cpu": [{"id": "cpu5c", "vcpuCount": 4}]}, 400, "CPU endpoints are not simulated"),
        ({"type": "LOAD_BALANCER", "scaling": {"type": "REQUEST_COUNT", "requestCount": 1}}, 400, "QUEUE"),
        ({"templateId": "tpl123"}, 404, "template tpl123 not found"),
    ],
)
def test_rules_stated_in_prose_are_enforced(
    runpod_sim: RunpodSimClient, change: dict, status: int, fragment: str
) -> None:
    body = runpod_sim.create_body() | change
    if "cpu" in change:
        del body["gpu"]

    assert fragment in problem_of(runpod_sim.v2("POST", "serverless", json=body), status)["detail"]


def test_patch_changes_only_what_it_carries(runpod_sim: RunpodSimClient) -> None:
    endpoint_id = runpod_sim.create_endpoint(
        env={"A": "1"}, workers={"min": 0, "max": 5, "idleTimeout": 60}, flashboot="FLASHBOOT", timeout=120_000
    )
    before = runpod_sim.v2("GET", f"serverless/{endpoint_id}").json()

    after = runpod_sim.patch(endpoint_id, workers={"max": 2}, name="visgate-renamed")

    assert after["workers"] == {"min": 0, "max": 2, "idleTimeout": 60}
    assert after["name"] == "visgate-renamed"
    unchanged = {k: v for k, v in after.items() if k not in ("workers", "name")}
    assert unchanged == {k: v for k, v in before.items() if k not in ("workers", "name")}
    assert runpod_sim.patch(endpoint_id) == after  # an empty PATCH changes nothing
    assert runpod_sim.patch(endpoint_id, env={"B": "2"})["env"] == {"B": "2"}  # env is replaced as a whole
    problem_of(runpod_sim.v2("PATCH", f"serverless/{endpoint_id}", json={"workers": {"min": 3}}), 400)
    problem_of(runpod_sim.v2("PATCH", f"serverless/{endpoint_id}", json={"gpuIds": "ADA_24"}), 400)


def test_patch_sending_pools_without_excluded_types_clears_them(runpod_sim: RunpodSimClient) -> None:
    gpu = {"pools": ["AMPERE_24"], "excludedTypes": ["NVIDIA L4"], "count": 2}
    endpoint_id = runpod_sim.create_endpoint(gpu=gpu)

    kept = runpod_sim.patch(endpoint_id, gpu={"minCudaVersion": "12.4"})
    cleared = runpod_sim.patch(endpoint_id, gpu={"pools": ["AMPERE_24", "AMPERE_48"]})

    assert kept["gpu"]["excludedTypes"] == ["NVIDIA L4"]
    assert kept["gpu"]["minCudaVersion"] == "12.4"
    assert "excludedTypes" not in cleared["gpu"]
    assert (cleared["gpu"]["pools"], cleared["gpu"]["count"]) == (["AMPERE_24", "AMPERE_48"], 2)
    assert runpod_sim.patch(endpoint_id, gpu={"minCudaVersion": ""})["gpu"]["minCudaVersion"] is None
    alone = runpod_sim.v2("PATCH", f"serverless/{endpoint_id}", json={"gpu": {"excludedTypes": ["NVIDIA L4"]}})
    assert any("pools" in e for e in problem_of(alone, 422)["errors"])


def test_excluded_types_steer_placement(runpod_sim: RunpodSimClient) -> None:
    gpu = {"pools": ["AMPERE_24"], "excludedTypes": ["NVIDIA RTX A5000"]}
    endpoint_id = runpod_sim.create_endpoint(gpu=gpu, workers={"min": 1, "max": 1})

    (worker,) = eventually(lambda: [w for w in runpod_sim.workers(endpoint_id)["workers"] if w["status"] == "IDLE"])

    assert worker["gpuTypeId"] == "NVIDIA L4"


def test_delete_terminates_workers_and_cancels_jobs(runpod_sim: RunpodSimClient) -> None:
    runpod_sim.scenario(start_delay_s=30)  # the worker stays INITIALIZING: the jobs stay queued
    endpoint_id = runpod_sim.create_endpoint(workers={"min": 1, "max": 1})
    eventually(lambda: runpod_sim.workers(endpoint_id)["summary"]["initializing"] == 1)
    jobs = [runpod_sim.v2("POST", f"{endpoint_id}/run", json={"input": {"n": n}}).json()["id"] for n in range(2)]

    deleted = runpod_sim.v2("DELETE", f"serverless/{endpoint_id}")

    assert (deleted.status_code, deleted.content) == (204, b"")
    state = runpod_sim.state()
    assert (state["endpoints"], state["workers"]) == ([], [])
    assert {j["id"]: j["status"] for j in state["jobs"]} == dict.fromkeys(jobs, "CANCELLED")
    problem_of(runpod_sim.v2("DELETE", f"serverless/{endpoint_id}"), 404)
    problem_of(runpod_sim.v2("GET", f"serverless/{endpoint_id}"), 404)
    assert runpod_sim.v2("GET", f"{endpoint_id}/health").status_code == 404


def test_workers_list_statuses_and_summary(runpod_sim: RunpodSimClient) -> None:
    runpod_sim.scenario(capacity={"ADA_24": 1})
    endpoint_id = runpod_sim.create_endpoint(workers={"min": 2, "max": 2})

    listed = eventually(lambda: (w := runpod_sim.workers(endpoint_id))["summary"]["idle"] == 1 and w)

    assert listed["summary"] == {"running": 0, "idle": 1, "initializing": 0, "throttled": 1, "unhealthy": 0, "total": 2}
    assert listed["endpointVersion"] == 1
    by_status = {w["status"]: w for w in listed["workers"]}
    idle, throttled = by_status["IDLE"], by_status["THROTTLED"]
    assert (idle["gpuTypeId"], idle["gpuCount"], idle["dataCenterId"]) == ("NVIDIA GeForce RTX 4090", 1, "SIM-LOCAL-1")
    assert (idle["image"], idle["version"], idle["isStale"]) == (IMAGE, 1, False)
    assert idle["startedAt"].endswith("Z")
    assert isinstance(idle["uptimeSeconds"], int)
    assert (throttled["gpuTypeId"], throttled["gpuCount"], throttled["startedAt"]) == (None, 0, None)


def test_a_new_release_rolls_idle_workers_onto_the_new_env(runpod_sim: RunpodSimClient) -> None:
    endpoint_id = runpod_sim.create_endpoint(env={"RELEASE": "1"}, workers={"min": 1, "max": 1})
    (first,) = eventually(lambda: [w for w in runpod_sim.workers(endpoint_id)["workers"] if w["status"] == "IDLE"])

    runpod_sim.patch(endpoint_id, env={"RELEASE": "2"})

    (second,) = eventually(
        lambda: [w for w in runpod_sim.workers(endpoint_id)["workers"] if w["status"] == "IDLE" and w["version"] == 2]
    )
    assert second["id"] != first["id"]
    assert runpod_sim.workers(endpoint_id)["endpointVersion"] == 2
    # A scaling-only PATCH is not a new release.
    runpod_sim.patch(endpoint_id, workers={"max": 2}, scaling={"type": "QUEUE_DELAY", "queueDelay": 2})
    assert runpod_sim.workers(endpoint_id)["endpointVersion"] == 2


def test_gpu_catalog_lists_pools_prices_and_availability(runpod_sim: RunpodSimClient) -> None:
    plain = runpod_sim.v2("GET", "catalog/gpus").json()["gpus"]
    by_id = {g["id"]: g for g in plain}

    for pool in SERVERLESS_POOLS:
        members = gpu_types_in_pool(pool.id)
        assert members, pool.id
        for gpu in members:
            entry = by_id[gpu.id]
            assert entry["pool"] == pool.id
            assert entry["memory"] >= pool.memory_in_gb
            assert entry["price"]["serverless"] > 0
            assert "availability" not in entry
    assert [g["pool"] for g in plain if g["pool"] is None] == [None]  # one pods-only type
    assert by_id["NVIDIA GeForce RTX 4090"]["memory"] == 24


def test_gpu_catalog_availability_follows_the_scenario_capacity(runpod_sim: RunpodSimClient) -> None:
    runpod_sim.scenario(capacity={"ADA_24": 1, "AMPERE_48": 0, "AMPERE_80": 3})
    query = {"include": "AVAILABILITY", "product": "SERVERLESS"}

    def levels() -> dict[str, str]:
        gpus = runpod_sim.v2("GET", "catalog/gpus", params=query).json()["gpus"]
        return {g["pool"]: g["availability"] for g in gpus if g["pool"]}

    first = levels()
    assert (first["ADA_24"], first["AMPERE_48"], first["AMPERE_80"], first["AMPERE_16"]) == (
        "LOW",
        "NONE",
        "MEDIUM",
        "HIGH",
    )
    runpod_sim.create_endpoint(workers={"min": 1, "max": 1})  # takes the one ADA_24 slot
    eventually(lambda: levels()["ADA_24"] == "NONE")
    gpus = runpod_sim.v2("GET", "catalog/gpus", params=query).json()["gpus"]
    full = next(g for g in gpus if g["pool"] == "ADA_24")
    assert "dataCenters" not in full
    problem_of(runpod_sim.v2("GET", "catalog/gpus", params={"include": "AVAILABILITY"}), 400)
    problem_of(runpod_sim.v2("GET", "catalog/gpus", params={"product": "SERVERLESS"}), 400)
    problem_of(runpod_sim.v2("GET", "catalog/gpus", params={"include": "PRICES"}), 422)


def test_auth_missing_or_unknown_key_is_401_problem(runpod_sim: RunpodSimClient) -> None:
    url = f"{runpod_sim.url}/v2/serverless"

    assert problem_of(requests.get(url, timeout=5), 401)["detail"] == "missing bearer token"
    assert problem_of(requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=5), 401)
    problem_of(requests.get(url, headers={"Authorization": runpod_sim.api_key}, timeout=5), 401)
    problem_of(requests.get(url, params={"api_key": runpod_sim.api_key}, timeout=5), 401)


def test_scenario_forces_429_then_500_then_a_refusal_then_recovers(runpod_sim: RunpodSimClient) -> None:
    runpod_sim.scenario(rate_limit=1, api_errors=1, api_refusals=1)

    limited = runpod_sim.v2("GET", "serverless")
    failed = runpod_sim.v2("GET", "serverless")
    refused = runpod_sim.v2("POST", "serverless", json=runpod_sim.create_body())
    fine = runpod_sim.v2("GET", "serverless")

    problem_of(limited, 429)
    assert int(limited.headers["Retry-After"]) >= 1
    assert '"minute";r=0' in limited.headers["RateLimit"]
    assert limited.headers["RateLimit-Policy"]
    problem_of(failed, 500)
    assert problem_of(refused, 400)["errors"]
    assert fine.status_code == 200
    assert runpod_sim.state()["endpoints"] == []
    scenario = requests.get(f"{runpod_sim.url}/_sim/scenario", timeout=5).json()
    assert (scenario["rate_limit"], scenario["api_errors"], scenario["api_refusals"]) == (0, 0, 0)


def test_graphql_scenario_keys_are_gone(runpod_sim: RunpodSimClient) -> None:
    for key in ("graphql_errors", "graphql_refusals", "duplicate_endpoint_names"):
        response = requests.post(f"{runpod_sim.url}/_sim/scenario", json={key: 1}, timeout=5)
        assert response.status_code == 400
        assert key in response.json()["error"]
    assert requests.post(f"{runpod_sim.url}/graphql", json={"query": "{ myself { id } }"}, timeout=5).status_code == 404


def test_requests_are_counted_per_account_on_both_planes(runpod_sim: RunpodSimClient) -> None:
    other_key = f"rpa_{uuid.uuid4().hex}"
    requests.post(f"{runpod_sim.url}/_sim/accounts", json={"api_key": other_key}, timeout=5).raise_for_status()
    assert runpod_sim.state()["requests"] == 0

    endpoint_id = runpod_sim.create_endpoint()
    runpod_sim.scenario(rate_limit=1)
    assert runpod_sim.v2("GET", "serverless").status_code == 429  # refused, but made with the key
    assert runpod_sim.v2("GET", f"{endpoint_id}/health").status_code == 200
    assert runpod_sim.v2("GET", "serverless", api_key="rpa_unregistered").status_code == 401

    state = runpod_sim.state()
    assert state["requests"] == 3
    assert state["templates"] == []
    assert [(e["id"], e["name"]) for e in state["endpoints"]] == [(endpoint_id, state["endpoints"][0]["name"])]
    other = next(
        a
        for a in requests.get(f"{runpod_sim.url}/_sim/state", timeout=5).json()["accounts"]
        if a["api_key"] == other_key
    )
    assert other["requests"] == 0

"""The Runpod simulator's ``/v2/{endpoint}`` data plane and autoscaler, with instant workers."""

from __future__ import annotations

import json
import uuid
from typing import Any

import requests

from tests.simulators.conftest import RunpodSimClient
from tests.support.receiver import serve_receiver
from tests.support.waiting import eventually


def health(runpod_sim: RunpodSimClient, endpoint_id: str) -> dict[str, Any]:
    """The endpoint's /health."""
    response = runpod_sim.v2("GET", f"{endpoint_id}/health")
    assert response.status_code == 200, response.text
    return response.json()


def status(runpod_sim: RunpodSimClient, endpoint_id: str, job_id: str) -> dict[str, Any]:
    """One job's /status."""
    response = runpod_sim.v2("GET", f"{endpoint_id}/status/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def test_run_then_status_and_runsync_complete(runpod_sim: RunpodSimClient) -> None:
    endpoint_id = runpod_sim.create_endpoint()

    queued = runpod_sim.v2("POST", f"{endpoint_id}/run", json={"input": {"warmup": True}}).json()
    assert queued["status"] == "IN_QUEUE"
    done = eventually(lambda: (s := status(runpod_sim, endpoint_id, queued["id"]))["status"] == "COMPLETED" and s)
    synced = runpod_sim.v2("POST", f"{endpoint_id}/runsync", json={"input": {"prompt": "a cat"}}).json()

    assert done["output"] == {"warmup": True}
    assert done["delayTime"] >= 0
    assert done["executionTime"] >= 0
    assert done["workerId"]
    assert synced["status"] == "COMPLETED"
    assert synced["output"] == {"stub": True, "input": {"prompt": "a cat"}}
    jobs = health(runpod_sim, endpoint_id)["jobs"]
    assert jobs == {"completed": 2, "failed": 0, "inProgress": 0, "inQueue": 0, "retried": 0}


def test_no_capacity_throttles_until_a_patch_names_a_pool_with_capacity(runpod_sim: RunpodSimClient) -> None:
    runpod_sim.scenario(capacity={"ADA_24": 0, "AMPERE_48": 0})
    endpoint_id = runpod_sim.create_endpoint(pools=("ADA_24", "AMPERE_48"))
    job = runpod_sim.v2("POST", f"{endpoint_id}/run", json={"input": {"warmup": True}}).json()

    throttled = eventually(lambda: (h := health(runpod_sim, endpoint_id))["workers"]["throttled"] == 1 and h)
    assert throttled["jobs"]["inQueue"] == 1
    assert throttled["workers"]["ready"] == 0
    unfinished = runpod_sim.v2("POST", f"{endpoint_id}/runsync", params={"wait": 1000}, json={"input": {}}).json()
    assert unfinished["status"] == "IN_QUEUE"
    assert status(runpod_sim, endpoint_id, job["id"])["status"] == "IN_QUEUE"

    runpod_sim.patch(endpoint_id, gpu={"pools": ["AMPERE_80"]})

    eventually(lambda: status(runpod_sim, endpoint_id, job["id"])["status"] == "COMPLETED")
    assert health(runpod_sim, endpoint_id)["workers"]["throttled"] == 0
    assert {w["pool"] for w in runpod_sim.state()["workers"]} == {"AMPERE_80"}


def test_workers_go_to_the_next_pool_in_priority_order_when_the_first_is_full(runpod_sim: RunpodSimClient) -> None:
    runpod_sim.scenario(capacity={"ADA_24": 0, "AMPERE_48": 1})
    endpoint_id = runpod_sim.create_endpoint(pools=("ADA_24", "AMPERE_48", "AMPERE_80"), workers={"min": 1, "max": 1})

    eventually(lambda: health(runpod_sim, endpoint_id)["workers"]["idle"] == 1)

    (worker,) = runpod_sim.state()["workers"]
    assert worker["pool"] == "AMPERE_48"
    assert worker["gpuTypeId"] == "NVIDIA RTX A6000"


def test_capacity_is_shared_by_every_endpoint(runpod_sim: RunpodSimClient) -> None:
    runpod_sim.scenario(capacity={"ADA_24": 1})
    first = runpod_sim.create_endpoint(workers={"min": 1, "max": 1})
    eventually(lambda: health(runpod_sim, first)["workers"]["idle"] == 1)

    second = runpod_sim.create_endpoint(workers={"min": 1, "max": 1})

    eventually(lambda: health(runpod_sim, second)["workers"]["throttled"] == 1)


def test_cancel_and_purge_queue(runpod_sim: RunpodSimClient) -> None:
    runpod_sim.scenario(capacity={"ADA_24": 0})
    endpoint_id = runpod_sim.create_endpoint()
    job_ids = [runpod_sim.v2("POST", f"{endpoint_id}/run", json={"input": {"n": n}}).json()["id"] for n in range(3)]

    cancelled = runpod_sim.v2("POST", f"{endpoint_id}/cancel/{job_ids[0]}").json()
    purged = runpod_sim.v2("POST", f"{endpoint_id}/purge-queue").json()

    assert cancelled == {"id": job_ids[0], "status": "CANCELLED"}
    assert status(runpod_sim, endpoint_id, job_ids[0])["status"] == "CANCELLED"
    assert purged == {"removed": 2, "status": "completed"}
    assert runpod_sim.v2("GET", f"{endpoint_id}/status/{job_ids[1]}").status_code == 404
    assert health(runpod_sim, endpoint_id)["jobs"]["inQueue"] == 0
    eventually(lambda: health(runpod_sim, endpoint_id)["workers"]["throttled"] == 0)


def test_data_plane_auth_and_unknown_resources(runpod_sim: RunpodSimClient) -> None:
    endpoint_id = runpod_sim.create_endpoint()
    other_key = f"rpa_{uuid.uuid4().hex}"
    requests.post(f"{runpod_sim.url}/_sim/accounts", json={"api_key": other_key}, timeout=5).raise_for_status()
    run_url = f"{runpod_sim.url}/v2/{endpoint_id}/run"

    assert requests.post(run_url, json={"input": {}}, timeout=5).status_code == 401
    bad_key = requests.post(run_url, json={"input": {}}, headers={"Authorization": "Bearer nope"}, timeout=5)
    assert bad_key.status_code == 401
    others = requests.post(run_url, json={"input": {}}, headers={"Authorization": f"Bearer {other_key}"}, timeout=5)
    assert others.status_code == 401
    assert runpod_sim.v2("GET", "nosuchendpoint/health").status_code == 404
    assert runpod_sim.v2("GET", f"{endpoint_id}/status/nosuchjob").status_code == 404
    assert runpod_sim.v2("POST", f"{endpoint_id}/run", json={"prompt": "no input field"}).status_code == 400


def test_idle_workers_stop_after_idle_timeout_and_scale_to_zero_stops_all(runpod_sim: RunpodSimClient) -> None:
    endpoint_id = runpod_sim.create_endpoint(workers={"idleTimeout": 1})
    runpod_sim.v2("POST", f"{endpoint_id}/runsync", json={"input": {"warmup": True}})
    assert health(runpod_sim, endpoint_id)["workers"]["idle"] == 1

    eventually(lambda: health(runpod_sim, endpoint_id)["workers"]["idle"] == 0, timeout_s=5)

    runpod_sim.patch(endpoint_id, workers={"min": 2, "max": 2})
    eventually(lambda: health(runpod_sim, endpoint_id)["workers"]["idle"] == 2)
    runpod_sim.patch(endpoint_id, workers={"min": 0, "max": 0})
    eventually(lambda: runpod_sim.state()["workers"] == [])


def test_reset_forgets_everything_but_the_initial_keys(runpod_sim: RunpodSimClient) -> None:
    endpoint_id = runpod_sim.create_endpoint(workers={"min": 1, "max": 1})
    runpod_sim.scenario(rate_limit=0, start_delay_s=0.1)
    eventually(lambda: health(runpod_sim, endpoint_id)["workers"]["idle"] == 1)

    requests.post(f"{runpod_sim.url}/_sim/reset", timeout=10).raise_for_status()

    state = runpod_sim.state()
    assert (state["templates"], state["endpoints"], state["jobs"], state["workers"]) == ([], [], [], [])
    assert requests.get(f"{runpod_sim.url}/_sim/scenario", timeout=5).json()["start_delay_s"] == 0.0
    assert runpod_sim.v2("GET", f"{endpoint_id}/health").status_code == 404


def test_job_policy_and_runsync_wait_are_checked_like_runpod(runpod_sim: RunpodSimClient) -> None:
    endpoint_id = runpod_sim.create_endpoint()
    bad_policies = [{"executionTimeout": "soon"}, {"executionTimeout": True}, {"ttl": 9999}, {"ttl": "x"}, "fast"]

    for policy in bad_policies:
        refused = runpod_sim.v2("POST", f"{endpoint_id}/run", json={"input": {}, "policy": policy})
        assert refused.status_code == 400, policy
        assert refused.headers["Content-Type"] == "application/json"
        assert "policy" in refused.json()["error"]
    for wait in ("999", "300001", "soon"):
        refused = runpod_sim.v2("POST", f"{endpoint_id}/runsync", params={"wait": wait}, json={"input": {}})
        assert refused.status_code == 400, wait
        assert "wait" in refused.json()["error"]

    policy = {"executionTimeout": 60_000, "ttl": 10_000, "lowPriority": False}
    done = runpod_sim.v2(
        "POST", f"{endpoint_id}/runsync", params={"wait": 300_000}, json={"input": {}, "policy": policy}
    )
    assert done.json()["status"] == "COMPLETED"
    assert len(runpod_sim.state()["jobs"]) == 1  # the refused ones never reached the queue


def test_unhandled_errors_answer_json_not_html(runpod_sim: RunpodSimClient) -> None:
    response = runpod_sim.v2("GET", "nosuchendpoint/no/such/route")

    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"


def test_a_job_s_webhook_gets_the_ended_job_and_is_retried_on_failure(runpod_sim: RunpodSimClient) -> None:
    runpod_sim.app.sim.job_webhook_retry_delay_s = 0.1
    endpoint_id = runpod_sim.create_endpoint()
    with serve_receiver() as hook:
        hook.script = [500, 200]
        body = {"input": {"prompt": "a cat"}, "webhook": hook.url}
        job_id = runpod_sim.v2("POST", f"{endpoint_id}/run", json=body).json()["id"]
        first, second = hook.wait(2)
    assert first["body"] == second["body"]
    sent = json.loads(first["body"])
    assert (sent["id"], sent["status"]) == (job_id, "COMPLETED")
    assert sent["output"] == {"stub": True, "input": {"prompt": "a cat"}}
    (job,) = [j for j in runpod_sim.app.sim.state()["accounts"][0]["jobs"] if j["id"] == job_id]
    assert job["webhookCalls"] == [500, 200]
    refused = runpod_sim.v2("POST", f"{endpoint_id}/run", json={"input": {}, "webhook": "ftp://example.com"})
    assert refused.status_code == 400

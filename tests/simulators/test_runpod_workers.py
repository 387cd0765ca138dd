"""Simulated Runpod workers: the instant worker's signed phase reports, scenarios, and a real SDK worker process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from shared.signing import new_secret, verify
from simulators.runpod.model import DEFAULT_WORKER_COMMAND
from tests.simulators.conftest import Receiver, RunpodSimClient
from tests.support.waiting import eventually


def worker_env(receiver: Receiver, secret: str) -> dict[str, str]:
    """The endpoint env provisioning sets for the worker's callback."""
    return {
        "VISGATE_DEPLOYMENT_ID": "dep_123",
        "VISGATE_CALLBACK_URL": receiver.url,
        "VISGATE_CALLBACK_SECRET": secret,
    }


def reports(receiver: Receiver, secret: str, count: int) -> list[dict]:
    """The first ``count`` reports, each checked to be signed with ``secret``."""
    bodies = []
    for headers, body in receiver.wait_for(count)[:count]:
        verify(secret, headers, body)
        assert headers["Content-Type"] == "application/json"
        bodies.append(json.loads(body))
    return bodies


def worker_processes(worker_id: str) -> list[int]:
    """Pids of live processes started for a worker (found by the RUNPOD_POD_ID in their environment)."""
    marker = f"RUNPOD_POD_ID={worker_id}".encode()
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                pids.append(int(environ.parent.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return pids


def test_instant_worker_sends_signed_phase_reports_then_completes_the_warmup(
    runpod_sim: RunpodSimClient, receiver: Receiver
) -> None:
    secret = new_secret()
    endpoint_id = runpod_sim.create_endpoint(env=worker_env(receiver, secret))

    job = runpod_sim.v2("POST", f"{endpoint_id}/run", json={"input": {"warmup": True}}).json()

    phases = reports(receiver, secret, 4)
    assert [r["phase"] for r in phases] == ["downloading_model", "downloading_model", "loading_model", "ready"]
    assert all(r["schema_version"] == 1 and r["deployment_id"] == "dep_123" for r in phases)
    assert phases[1]["bytes_done"] == phases[1]["bytes_total"] > 0
    assert set(phases[3]["timings"]) == {"download_s", "load_s", "warmup_s"}
    # The GPU the simulator placed the worker on (the endpoint's only pool, ADA_24), as a real worker reports it.
    assert phases[3]["gpu_type_id"] == "NVIDIA GeForce RTX 4090"
    status_url = f"{endpoint_id}/status/{job['id']}"
    done = eventually(lambda: (s := runpod_sim.v2("GET", status_url).json())["status"] == "COMPLETED" and s)
    assert done["output"] == {"warmup": True}


@pytest.mark.parametrize(("report", "reason"), [("out_of_memory", "out_of_memory"), ("failed", "model_load_failed")])
def test_worker_report_scenario_reports_failure_and_leaves_the_worker_unhealthy(
    runpod_sim: RunpodSimClient, receiver: Receiver, report: str, reason: str
) -> None:
    secret = new_secret()
    runpod_sim.scenario(worker_report=report)
    endpoint_id = runpod_sim.create_endpoint(env=worker_env(receiver, secret))

    runpod_sim.v2("POST", f"{endpoint_id}/run", json={"input": {"warmup": True}})

    failure = reports(receiver, secret, 4)[-1]
    assert failure["phase"] == "failed"
    assert failure["reason"] == reason
    assert failure["message"]
    eventually(lambda: runpod_sim.v2("GET", f"{endpoint_id}/health").json()["workers"]["unhealthy"] == 1)
    assert runpod_sim.v2("GET", f"{endpoint_id}/health").json()["jobs"]["inQueue"] == 1


def test_worker_report_is_refused_in_process_mode(runpod_sim: RunpodSimClient) -> None:
    url = f"{runpod_sim.url}/_sim/scenario"

    both = requests.post(url, json={"worker_mode": "process", "worker_report": "failed"}, timeout=5)
    runpod_sim.scenario(worker_mode="process")
    later = requests.post(url, json={"worker_report": "out_of_memory"}, timeout=5)
    runpod_sim.scenario(worker_mode="instant", worker_report="failed")
    back = requests.post(url, json={"worker_mode": "process"}, timeout=5)

    assert [r.status_code for r in (both, later, back)] == [400, 400, 400]
    assert "instant workers only" in later.json()["error"]
    assert requests.get(url, timeout=5).json()["worker_mode"] == "instant"


def test_start_delay_keeps_workers_initializing(runpod_sim: RunpodSimClient) -> None:
    runpod_sim.scenario(start_delay_s=0.5)
    endpoint_id = runpod_sim.create_endpoint()

    runpod_sim.v2("POST", f"{endpoint_id}/run", json={"input": {"warmup": True}})

    eventually(lambda: runpod_sim.v2("GET", f"{endpoint_id}/health").json()["workers"]["initializing"] == 1)
    eventually(lambda: runpod_sim.v2("GET", f"{endpoint_id}/health").json()["jobs"]["completed"] == 1)


@pytest.mark.parametrize("mode", ["instant", "process"])
def test_crash_on_start_makes_the_worker_unhealthy(runpod_sim: RunpodSimClient, mode: str) -> None:
    runpod_sim.scenario(worker_mode=mode, crash_on_start=True)
    endpoint_id = runpod_sim.create_endpoint(workers={"max": 1})

    runpod_sim.v2("POST", f"{endpoint_id}/run", json={"input": {"warmup": True}})

    eventually(lambda: runpod_sim.v2("GET", f"{endpoint_id}/health").json()["workers"]["unhealthy"] == 1)
    (worker,) = runpod_sim.state()["workers"]
    assert worker["exitCode"] == 1
    (listed,) = runpod_sim.workers(endpoint_id)["workers"]
    assert (listed["id"], listed["status"]) == (worker["id"], "UNHEALTHY")
    # A new release (here: a changed env) replaces the crashed worker: a healthy start completes the queued job.
    runpod_sim.scenario(crash_on_start=False, worker_mode="instant")
    runpod_sim.patch(endpoint_id, env={"RELEASE": "2"})
    eventually(lambda: runpod_sim.v2("GET", f"{endpoint_id}/health").json()["jobs"]["completed"] == 1)


def test_process_worker_runs_the_real_sdk_loop_and_leaves_no_process_behind(runpod_sim: RunpodSimClient) -> None:
    runpod_sim.scenario(worker_mode="process", worker_command=list(DEFAULT_WORKER_COMMAND))
    endpoint_id = runpod_sim.create_endpoint(env={"GREETING": "hi"})

    synced = runpod_sim.v2("POST", f"{endpoint_id}/runsync", params={"wait": 30_000}, json={"input": {"x": 1}}).json()

    (worker,) = runpod_sim.state()["workers"]
    log_text = Path(worker["logPath"]).read_text()
    assert synced["status"] == "COMPLETED", log_text
    assert synced["output"] == {"echo": {"x": 1}}
    assert synced["workerId"] == worker["id"]
    assert worker_processes(worker["id"]), "the worker process should be running"
    assert "Heartbeat Sent" in log_text or "job-take" in log_text

    runpod_sim.patch(endpoint_id, workers={"min": 0, "max": 0})

    eventually(lambda: runpod_sim.state()["workers"] == [])
    eventually(lambda: worker_processes(worker["id"]) == [], timeout_s=8)

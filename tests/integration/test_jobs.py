"""Inference through the API (issue 11): jobs, invoke keys, usage and GPU pools, against the Firestore emulator and
the Runpod simulator's instant workers, through the intake function's own test client."""

from __future__ import annotations

import base64
import concurrent.futures
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from flask import Flask
from flask import request as flask_request
from google.cloud import firestore

from shared.config import IntakeSettings, get_settings
from shared.creation import NewDeployment
from shared.crypto import Sealer, tenant_id
from shared.jobs.records import JOBS, USAGE_DAYS
from shared.lifecycle import Status
from shared.models import SealedCredentials
from shared.runpod.client import (
    RunpodConnector,
)
from shared.store import DEPLOYMENTS, DeploymentStore, utcnow
from shared.wiring.intake import intake_api, intake_clients, job_routes
from tests.support.jobs import PROMPT, auth, key, sim_requests, usage_of, write_ready
from tests.support.waiting import eventually

pytestmark = pytest.mark.usefixtures("intake_env")

# --- runsync, run, status, list, cancel -----------------------------------------------------------------------------


def test_runsync_answers_the_output_records_the_job_and_counts_it(
    intake_client: Any, db: firestore.Client, ready: Any
) -> None:
    api_key, dep = ready()
    resp = intake_client.post(
        f"/v1/deployments/{dep}/runsync?wait=10000", json={"input": PROMPT}, headers=auth(api_key)
    )
    assert resp.status_code == 200, resp.json
    body = resp.json
    assert body["status"] == "COMPLETED"
    assert body["output"] == {"stub": True, "input": PROMPT}  # the instant worker echoes what it got
    assert set(body["metrics"]) >= {"delay_ms", "execution_ms", "estimated_cost_usd"}
    assert body["metrics"]["pool"] == "AMPERE_16"
    assert body["status_url"].endswith(f"/v1/deployments/{dep}/jobs/{body['job_id']}")

    stored = db.collection(DEPLOYMENTS).document(dep).collection(JOBS).document(body["job_id"]).get().to_dict()
    assert stored["status"] == "COMPLETED"
    assert stored["owner"] == tenant_id(os.environ["TENANT_PEPPER"], api_key)
    assert stored["input_summary"]["prompt_chars"] == len(PROMPT["prompt"])
    assert stored["input_summary"]["width"] == 64
    assert PROMPT["prompt"] not in str(stored)  # a summary, not the prompt
    assert stored["expires_at"] > stored["created_at"]  # the TTL field
    assert stored["finished_at"] is not None

    job = intake_client.get(f"/v1/deployments/{dep}/jobs/{body['job_id']}", headers=auth(api_key))
    assert job.status_code == 200
    assert job.json["status"] == "COMPLETED"
    usage = usage_of(intake_client, api_key, dep)
    assert (usage["requests"], usage["completed"], usage["failed"], usage["cancelled"]) == (1, 1, 0, 0)
    assert usage["execution_ms"] == stored["execution_ms"]
    assert usage["estimated_cost_usd"] == pytest.approx(stored["execution_ms"] / 1000 * 0.00016, rel=0.5, abs=1e-9)


def test_run_then_get_refreshes_from_runpod_and_writes_back_once(
    intake_client: Any, db: firestore.Client, ready: Any
) -> None:
    api_key, dep = ready()
    resp = intake_client.post(f"/v1/deployments/{dep}/run", json={"input": PROMPT}, headers=auth(api_key))
    assert resp.status_code == 202, resp.json
    job_id = resp.json["job_id"]
    assert resp.json["status"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    path = resp.json["status_url"].split("/intake", 1)[-1]
    job = eventually(
        lambda: (j := intake_client.get(path, headers=auth(api_key)).json)["status"] == "COMPLETED" and j, 10
    )
    assert job["status"] == "COMPLETED"
    assert job["output"] == {"stub": True, "input": PROMPT}
    stored = db.collection(DEPLOYMENTS).document(dep).collection(JOBS).document(job_id).get().to_dict()
    assert stored["status"] == "COMPLETED" and stored["counted"] is True
    again = intake_client.get(path, headers=auth(api_key)).json
    assert again["status"] == "COMPLETED" and again["output"] == job["output"]  # Runpod's, while it keeps it
    assert "output" not in stored  # never stored
    usage = usage_of(intake_client, api_key, dep)
    assert (usage["requests"], usage["completed"]) == (1, 1)

    listed = intake_client.get(f"/v1/deployments/{dep}/jobs?limit=1", headers=auth(api_key)).json
    assert [j["job_id"] for j in listed["jobs"]] == [job_id]


def test_runsync_past_its_wait_is_202_and_cancel_counts_once(intake_client: Any, ready: Any) -> None:
    api_key, dep = ready(workers_max=0)  # no worker ever starts: the job stays IN_QUEUE
    resp = intake_client.post(f"/v1/deployments/{dep}/runsync?wait=1000", json={"input": PROMPT}, headers=auth(api_key))
    assert resp.status_code == 202, resp.json
    assert resp.json["status"] == "IN_QUEUE"
    job_id = resp.json["job_id"]
    status = intake_client.get(f"/v1/deployments/{dep}/jobs/{job_id}", headers=auth(api_key)).json
    assert status["status"] == "IN_QUEUE"
    cancelled = intake_client.post(f"/v1/deployments/{dep}/jobs/{job_id}/cancel", headers=auth(api_key))
    assert cancelled.status_code == 200, cancelled.json
    assert cancelled.json["status"] == "CANCELLED"
    again = intake_client.post(f"/v1/deployments/{dep}/jobs/{job_id}/cancel", headers=auth(api_key))
    assert again.json["status"] == "CANCELLED"
    usage = usage_of(intake_client, api_key, dep)
    assert (usage["requests"], usage["completed"], usage["cancelled"]) == (1, 0, 1)


@pytest.mark.parametrize("wait", ["999", "300001", "abc", "-5", "1e4"])
def test_runsync_refuses_a_bad_wait(intake_client: Any, ready: Any, wait: str) -> None:
    api_key, dep = ready()
    resp = intake_client.post(
        f"/v1/deployments/{dep}/runsync?wait={wait}", json={"input": PROMPT}, headers=auth(api_key)
    )
    assert resp.status_code == 400
    assert resp.json["error"]["code"] == "invalid_wait"


@pytest.mark.parametrize(
    ("job_input", "field"),
    [
        ({**PROMPT, "num_inference_steps": 0}, "input.num_inference_steps"),
        ({**PROMPT, "width": 65}, "input.width"),
        ({**PROMPT, "steps": 4}, "input.steps"),
        ({"prompt": "   "}, "input.prompt"),
        ({**PROMPT, "num_inference_steps": "4"}, "input.num_inference_steps"),
        ({**PROMPT, "strength": 0.5}, "input.strength"),  # not taken by a text_to_image deployment
    ],
)
def test_a_bad_input_is_400_naming_the_field_and_never_reaches_runpod(
    intake_client: Any, ready: Any, job_input: dict[str, Any], field: str
) -> None:
    api_key, dep = ready()
    before = sim_requests(api_key)
    for route in ("runsync", "run"):
        resp = intake_client.post(f"/v1/deployments/{dep}/{route}", json={"input": job_input}, headers=auth(api_key))
        assert resp.status_code == 400, resp.json
        assert resp.json["error"]["code"] == "invalid_request"
        assert field in [d["field"] for d in resp.json["error"]["details"]]
    assert sim_requests(api_key) == before
    assert usage_of(intake_client, api_key, dep)["requests"] == 0


def test_an_unknown_body_field_or_missing_input_is_400(intake_client: Any, ready: Any) -> None:
    api_key, dep = ready()
    for body in ({"input": PROMPT, "webhook": "https://example.com/hook"}, {}):
        resp = intake_client.post(f"/v1/deployments/{dep}/run", json=body, headers=auth(api_key))
        assert resp.status_code == 400
        assert resp.json["error"]["code"] == "invalid_request"


def test_a_deployment_not_ready_is_409_with_its_status(intake_client: Any) -> None:
    api_key = key()
    dep = intake_client.post("/v1/deployments", json={"hf_model_id": "org/model"}, headers=auth(api_key)).json[
        "deployment_id"
    ]
    before = sim_requests(api_key)
    for route in ("runsync", "run"):
        resp = intake_client.post(f"/v1/deployments/{dep}/{route}", json={"input": PROMPT}, headers=auth(api_key))
        assert resp.status_code == 409
        assert resp.json["error"]["code"] == "deployment_not_ready"
        assert resp.json["error"]["details"]["status"] in ("validating", "selecting_gpu", "failed")
    assert sim_requests(api_key) == before


def test_unknown_job_and_someone_elses_deployment_are_404(intake_client: Any, ready: Any) -> None:
    api_key, dep = ready()
    missing = intake_client.get(f"/v1/deployments/{dep}/jobs/nosuchjob-1", headers=auth(api_key))
    assert (missing.status_code, missing.json["error"]["code"]) == (404, "job_not_found")
    cancel = intake_client.post(f"/v1/deployments/{dep}/jobs/nosuchjob-1/cancel", headers=auth(api_key))
    assert cancel.status_code == 404
    theirs = intake_client.post(f"/v1/deployments/{dep}/runsync", json={"input": PROMPT}, headers=auth(key()))
    assert (theirs.status_code, theirs.json["error"]["code"]) == (404, "deployment_not_found")
    listing = intake_client.get(f"/v1/deployments/{dep}/jobs?page_token=bogus!!", headers=auth(api_key))
    assert listing.json["error"]["code"] == "invalid_page_token"
    nested = base64.urlsafe_b64encode(("[" * 100_000 + "]" * 100_000).encode()).decode().rstrip("=")
    for token in (nested, "A" * 600):  # deeply nested (was a RecursionError, a 500), longer than any we issue
        listing = intake_client.get(f"/v1/deployments/{dep}/jobs?page_token={token}", headers=auth(api_key))
        assert (listing.status_code, listing.json["error"]["code"]) == (400, "invalid_page_token")


def test_jobs_are_listed_newest_first_and_paginated(intake_client: Any, ready: Any) -> None:
    api_key, dep = ready()
    ids = [
        intake_client.post(f"/v1/deployments/{dep}/run", json={"input": PROMPT}, headers=auth(api_key)).json["job_id"]
        for _ in range(3)
    ]
    seen: list[str] = []
    token = None
    while True:
        query = "limit=2" + (f"&page_token={token}" if token else "")
        page = intake_client.get(f"/v1/deployments/{dep}/jobs?{query}", headers=auth(api_key)).json
        seen += [j["job_id"] for j in page["jobs"]]
        token = page["next_page_token"]
        if not token:
            break
    assert seen == list(reversed(ids))


# --- invoke keys -----------------------------------------------------------------------------------------------------


def test_invoke_keys_open_their_deployment_only_and_die_on_revocation(
    intake_client: Any, db: firestore.Client, ready: Any
) -> None:
    api_key, dep = ready()
    _, other = ready()
    created = intake_client.post(f"/v1/deployments/{dep}/keys", headers=auth(api_key))
    assert created.status_code == 201, created.json
    invoke = created.json["key"]
    assert invoke.startswith("vdk_")
    assert created.headers["Cache-Control"] == "no-store"
    listed = intake_client.get(f"/v1/deployments/{dep}/keys", headers=auth(api_key)).json["keys"]
    assert [k["key_id"] for k in listed] == [created.json["key_id"]]
    assert invoke[:12] == listed[0]["prefix"] and "key" not in listed[0]
    stored = [snap.to_dict() for snap in db.collection("invoke_keys").stream() if snap.id == created.json["key_id"]]
    assert invoke not in str(stored)  # only the hash is stored

    # Accepted on its deployment: runsync, run, jobs, get.
    sync = intake_client.post(f"/v1/deployments/{dep}/runsync", json={"input": PROMPT}, headers=auth(invoke))
    assert sync.status_code == 200, sync.json
    assert sync.json["output"] == {"stub": True, "input": PROMPT}
    queued = intake_client.post(f"/v1/deployments/{dep}/run", json={"input": PROMPT}, headers=auth(invoke))
    assert queued.status_code == 202
    assert (
        intake_client.get(f"/v1/deployments/{dep}/jobs/{sync.json['job_id']}", headers=auth(invoke)).status_code == 200
    )
    assert intake_client.get(f"/v1/deployments/{dep}/jobs", headers=auth(invoke)).status_code == 200
    job_id = queued.json["job_id"]
    assert intake_client.post(f"/v1/deployments/{dep}/jobs/{job_id}/cancel", headers=auth(invoke)).status_code == 200
    view = intake_client.get(f"/v1/deployments/{dep}", headers=auth(invoke))
    assert view.status_code == 200 and view.json["usage"]["requests"] == 2

    # Refused on another deployment (404) and on the management routes (401).
    for method, path in (("post", f"/v1/deployments/{other}/runsync"), ("get", f"/v1/deployments/{other}")):
        resp = getattr(intake_client, method)(path, json={"input": PROMPT}, headers=auth(invoke))
        assert (resp.status_code, resp.json["error"]["code"]) == (404, "deployment_not_found")
    for method, path in (
        ("get", "/v1/deployments"),
        ("post", "/v1/deployments"),
        ("delete", f"/v1/deployments/{dep}"),
        ("get", f"/v1/deployments/{dep}/logs"),
        ("post", f"/v1/deployments/{dep}/keys"),
        ("get", f"/v1/deployments/{dep}/keys"),
        ("delete", f"/v1/deployments/{dep}/keys/{created.json['key_id']}"),
        ("get", "/v1/usage"),
        ("get", "/v1/gpus"),
    ):
        resp = getattr(intake_client, method)(path, json={"hf_model_id": "org/model"}, headers=auth(invoke))
        assert resp.status_code == 401, (method, path, resp.json)
        assert resp.json["error"]["code"] == "invalid_api_key"

    # Revoked: refused at once.
    revoked = intake_client.delete(f"/v1/deployments/{dep}/keys/{created.json['key_id']}", headers=auth(api_key))
    assert revoked.status_code == 204
    after = intake_client.post(f"/v1/deployments/{dep}/runsync", json={"input": PROMPT}, headers=auth(invoke))
    assert (after.status_code, after.json["error"]["code"]) == (401, "invalid_api_key")
    assert intake_client.get(f"/v1/deployments/{dep}", headers=auth(invoke)).status_code == 401
    gone = intake_client.delete(f"/v1/deployments/{dep}/keys/{created.json['key_id']}", headers=auth(api_key))
    assert (gone.status_code, gone.json["error"]["code"]) == (404, "invoke_key_not_found")
    assert intake_client.get(f"/v1/deployments/{dep}/keys", headers=auth(api_key)).json["keys"] == []


@pytest.mark.parametrize("status", [Status.DELETING, Status.DELETED])
def test_invoke_keys_die_with_their_deployment(
    intake_client: Any, db: firestore.Client, ready: Any, status: Status
) -> None:
    """Once its deployment is deleting or deleted, a key reads neither the view nor the jobs (issue 18)."""
    api_key, dep = ready()
    invoke = intake_client.post(f"/v1/deployments/{dep}/keys", headers=auth(api_key)).json["key"]
    sync = intake_client.post(f"/v1/deployments/{dep}/runsync", json={"input": PROMPT}, headers=auth(invoke))
    assert sync.status_code == 200, sync.json
    db.collection(DEPLOYMENTS).document(dep).update({"status": status.value})
    for method, path in (
        ("get", f"/v1/deployments/{dep}"),
        ("get", f"/v1/deployments/{dep}/jobs"),
        ("get", f"/v1/deployments/{dep}/jobs/{sync.json['job_id']}"),
        ("post", f"/v1/deployments/{dep}/jobs/{sync.json['job_id']}/cancel"),
        ("post", f"/v1/deployments/{dep}/run"),
        ("post", f"/v1/deployments/{dep}/runsync"),
    ):
        resp = getattr(intake_client, method)(path, json={"input": PROMPT}, headers=auth(invoke))
        assert (resp.status_code, resp.json["error"]["code"]) == (401, "invalid_api_key"), (method, path)
    # The owner still reads it.
    assert intake_client.get(f"/v1/deployments/{dep}", headers=auth(api_key)).json["status"] == status.value


def test_an_invoke_key_lists_reads_and_cancels_only_its_own_jobs(
    intake_client: Any, db: firestore.Client, ready: Any
) -> None:
    """Each job records who submitted it; a key sees its own jobs, the owner all of them (issue 18)."""
    api_key, dep = ready()
    keys = [intake_client.post(f"/v1/deployments/{dep}/keys", headers=auth(api_key)).json for _ in range(2)]
    (first, first_id), (second, _) = [(k["key"], k["key_id"]) for k in keys]

    def submit(who: str, route: str = "run") -> str:
        resp = intake_client.post(f"/v1/deployments/{dep}/{route}", json={"input": PROMPT}, headers=auth(who))
        assert resp.status_code in (200, 202), resp.json
        return str(resp.json["job_id"])

    owners, firsts = submit(api_key, "runsync"), [submit(first), submit(first, "runsync")]
    seconds = submit(second)
    stored = db.collection(DEPLOYMENTS).document(dep).collection(JOBS)
    assert stored.document(owners).get().to_dict()["submitted_by"] == "owner"
    assert stored.document(firsts[0]).get().to_dict()["submitted_by"] == first_id

    def listed(who: str, limit: int = 100) -> list[str]:
        ids, token = [], None
        while True:
            query = f"limit={limit}" + (f"&page_token={token}" if token else "")
            page = intake_client.get(f"/v1/deployments/{dep}/jobs?{query}", headers=auth(who))
            assert page.status_code == 200, page.json
            ids += [j["job_id"] for j in page.json["jobs"]]
            token = page.json["next_page_token"]
            if not token:
                return ids

    assert sorted(listed(first, limit=1)) == sorted(firsts)
    assert listed(second) == [seconds]
    assert sorted(listed(api_key)) == sorted([owners, *firsts, seconds])
    mine = intake_client.get(f"/v1/deployments/{dep}/jobs/{firsts[0]}", headers=auth(first))
    assert (mine.status_code, mine.json["submitted_by"]) == (200, first_id)
    for job_id in (owners, seconds):  # another's job is no job to this key: not read, not cancelled
        read = intake_client.get(f"/v1/deployments/{dep}/jobs/{job_id}", headers=auth(first))
        assert (read.status_code, read.json["error"]["code"]) == (404, "job_not_found")
        cancel = intake_client.post(f"/v1/deployments/{dep}/jobs/{job_id}/cancel", headers=auth(first))
        assert (cancel.status_code, cancel.json["error"]["code"]) == (404, "job_not_found")
    assert intake_client.get(f"/v1/deployments/{dep}/jobs/{seconds}", headers=auth(second)).status_code == 200
    everyone = intake_client.get(f"/v1/deployments/{dep}/jobs/{seconds}", headers=auth(api_key))
    assert (everyone.status_code, everyone.json["submitted_by"]) == (200, keys[1]["key_id"])
    assert intake_client.post(f"/v1/deployments/{dep}/jobs/{seconds}/cancel", headers=auth(api_key)).status_code == 200


def test_forged_and_foreign_invoke_keys_are_refused(intake_client: Any, ready: Any) -> None:
    api_key, dep = ready()
    _, other = ready()
    real = intake_client.post(f"/v1/deployments/{dep}/keys", headers=auth(api_key)).json["key"]
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    for bad in (forged, "vdk_", "vdk_0123456789abcdef_short"):
        resp = intake_client.post(f"/v1/deployments/{dep}/runsync", json={"input": PROMPT}, headers=auth(bad))
        assert resp.status_code == 401, bad
    # Someone else's Runpod key cannot mint keys on this deployment, nor can the owner on a missing one.
    assert intake_client.post(f"/v1/deployments/{dep}/keys", headers=auth(key())).status_code == 404
    assert intake_client.post(f"/v1/deployments/{other}/keys", headers=auth(api_key)).status_code == 404


# --- usage: exact under concurrency --------------------------------------------------------------------------------


def test_usage_counters_are_exact_under_50_concurrent_jobs(
    intake_client_factory: Any, intake_client: Any, db: firestore.Client, ready: Any
) -> None:
    api_key, dep = ready(workers_max=3)
    invoke = intake_client.post(f"/v1/deployments/{dep}/keys", headers=auth(api_key)).json["key"]
    clients = [intake_client_factory() for _ in range(10)]

    def call(i: int) -> Any:
        headers = auth(invoke if i % 2 else api_key)
        return clients[i % 10].post(
            f"/v1/deployments/{dep}/runsync?wait=60000", json={"input": {**PROMPT, "seed": i}}, headers=headers
        )

    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(call, range(50)))
    assert [r.status_code for r in responses] == [200] * 50, [r.json for r in responses if r.status_code != 200]
    assert {r.json["status"] for r in responses} == {"COMPLETED"}
    usage = usage_of(intake_client, api_key, dep)
    assert (usage["requests"], usage["completed"], usage["failed"], usage["cancelled"]) == (50, 50, 0, 0)
    stored = [snap.to_dict() for snap in db.collection(DEPLOYMENTS).document(dep).collection(JOBS).stream()]
    assert len(stored) == 50
    assert usage["execution_ms"] == sum(s["execution_ms"] or 0 for s in stored)
    assert usage["estimated_cost_usd"] == pytest.approx(sum(s["estimated_cost_usd"] for s in stored))

    report = intake_client.get("/v1/usage", headers=auth(api_key))
    assert report.status_code == 200, report.json
    assert [d["deployment_id"] for d in report.json["deployments"]] == [dep]
    assert report.json["total"]["requests"] == report.json["deployments"][0]["usage"]["requests"] == 50
    assert report.json["total"]["completed"] == 50


def test_usage_report_is_per_caller_and_per_period(intake_client: Any, db: firestore.Client, ready: Any) -> None:
    api_key, dep = ready()
    intake_client.post(f"/v1/deployments/{dep}/runsync", json={"input": PROMPT}, headers=auth(api_key))
    today = datetime.now(UTC).date().isoformat()
    mine = intake_client.get(f"/v1/usage?from={today}&to={today}", headers=auth(api_key)).json
    assert mine["total"]["requests"] == 1 and mine["from_day"] == mine["to_day"] == today
    assert (
        intake_client.get("/v1/usage?from=2001-01-01&to=2001-01-31", headers=auth(api_key)).json["total"]["requests"]
        == 0
    )
    assert intake_client.get("/v1/usage", headers=auth(key())).json["deployments"] == []
    days = [s.id for s in db.collection(USAGE_DAYS).stream() if s.id.startswith(dep)]
    assert days == [f"{dep}_{today}"]
    for query in ("from=2026-13-01", "from=2026-02-01&to=2026-01-01", "from=2020-01-01&to=2026-01-01"):
        resp = intake_client.get(f"/v1/usage?{query}", headers=auth(api_key))
        assert (resp.status_code, resp.json["error"]["code"]) == (400, "invalid_period")


def test_gpus_lists_pools_with_vram_price_and_availability(intake_client: Any) -> None:
    resp = intake_client.get("/v1/gpus", headers=auth(key()))
    assert resp.status_code == 200, resp.json
    pools = resp.json["pools"]
    assert pools
    for pool in pools:
        assert pool["vram_gb"] > 0 and pool["usd_per_second"] > 0
        assert pool["available"] in (True, False)
        assert pool["usd_per_hour"] == pytest.approx(pool["usd_per_second"] * 3600, abs=1e-3)
    assert [p["vram_gb"] for p in pools] == sorted(p["vram_gb"] for p in pools)


# --- Runpod failing: 502 unreachable, 504 timeout, 502 auth failed ---------------------------------------------------


class _Silent:
    """A TCP listener that accepts connections and never answers: Runpod timing out."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        try:
            while True:
                conn, _ = self._sock.accept()
                self._conns.append(conn)
        except OSError:
            return

    def close(self) -> None:
        for conn in self._conns:
            conn.close()
        self._sock.close()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _api_with_runpod_at(db: firestore.Client, data_plane_url: str, timeout_s: float) -> Any:
    """The intake API whose job routes call Runpod at ``data_plane_url`` (everything else as in the function)."""
    settings = get_settings(IntakeSettings)
    clients = intake_clients(settings)
    runpod_at = RunpodConnector(settings.runpod_api_base_url, data_plane_url, timeout_s)
    api = intake_api(settings, clients, jobs=job_routes(settings, replace(clients, runpod=runpod_at)))
    app = Flask(__name__)
    app.add_url_rule("/<path:_path>", view_func=lambda _path: api(flask_request), methods=["GET", "POST", "DELETE"])
    return app.test_client()


@pytest.fixture
def silent_runpod() -> Iterator[str]:
    silent = _Silent()
    yield silent.url
    silent.close()


def test_runpod_unreachable_is_502_and_timing_out_is_504(db: firestore.Client, ready: Any, silent_runpod: str) -> None:
    api_key, dep = ready()
    unreachable = _api_with_runpod_at(db, _closed_port_url(), 2.0)
    for route in ("runsync", "run"):
        resp = unreachable.post(f"/v1/deployments/{dep}/{route}", json={"input": PROMPT}, headers=auth(api_key))
        assert (resp.status_code, resp.json["error"]["code"]) == (502, "runpod_unreachable"), resp.json
    timing_out = _api_with_runpod_at(db, silent_runpod, 0.3)
    resp = timing_out.post(f"/v1/deployments/{dep}/runsync?wait=1000", json={"input": PROMPT}, headers=auth(api_key))
    assert (resp.status_code, resp.json["error"]["code"]) == (504, "runpod_timeout"), resp.json
    resp = timing_out.post(f"/v1/deployments/{dep}/run", json={"input": PROMPT}, headers=auth(api_key))
    assert (resp.status_code, resp.json["error"]["code"]) == (504, "runpod_timeout")
    assert resp.json["error"]["request_id"]


def test_runpod_refusing_the_sealed_key_is_502_runpod_auth_failed(
    intake_client: Any, db: firestore.Client, ready: Any
) -> None:
    """An invoke-key call on a deployment whose sealed Runpod key Runpod no longer accepts (revoked, say)."""
    owner_key, template = ready()
    doc = DeploymentStore(db).get(template)
    assert doc is not None
    dep = uuid.uuid4().hex
    sealer = Sealer(os.environ["SEALING_KEY"])
    copy = doc.model_copy(update={"deployment_id": dep, "created_at": utcnow(), "updated_at": utcnow()})
    DeploymentStore(db).create(
        NewDeployment(
            document=copy,
            sealed_credentials=sealer.seal(dep, SealedCredentials(runpod_api_key=f"rp_revoked_{uuid.uuid4().hex}")),
            callback_nonce="n",
            callback_secret_hash="h",
        )
    )
    invoke = intake_client.post(f"/v1/deployments/{dep}/keys", headers=auth(owner_key)).json["key"]
    resp = intake_client.post(f"/v1/deployments/{dep}/runsync", json={"input": PROMPT}, headers=auth(invoke))
    assert (resp.status_code, resp.json["error"]["code"]) == (502, "runpod_auth_failed"), resp.json


# --- outputs to the deployment's own bucket --------------------------------------------------------------------------


def test_a_deployment_with_an_output_bucket_sends_it_as_the_jobs_s3config(
    intake_client: Any, db: firestore.Client
) -> None:
    api_key = key()
    body = {
        "hf_model_id": "org/model",
        "output_s3_url": "s3://my-outputs/images",
        "user_aws_access_key_id": "AKIAOUTPUT",
        "user_aws_secret_access_key": "output-secret-value",
        "user_aws_endpoint_url": "http://127.0.0.1:9000",
    }
    created = intake_client.post("/v1/deployments", json=body, headers=auth(api_key))
    assert created.status_code == 202, created.json
    dep = created.json["deployment_id"]
    view = intake_client.get(f"/v1/deployments/{dep}", headers=auth(api_key)).json
    assert view["output_s3_url"] == "s3://my-outputs/images"
    assert "output-secret-value" not in str(db.collection(DEPLOYMENTS).document(dep).get().to_dict())
    # The job runs on a ready twin written directly (provisioning may be failing the first: org/model is no model).
    dep = write_ready(
        db,
        api_key,
        output_s3_url="s3://my-outputs/images",
        user_aws_endpoint_url="http://127.0.0.1:9000",
        credentials={"user_aws_access_key_id": "AKIAOUTPUT", "user_aws_secret_access_key": "output-secret-value"},
    )

    resp = intake_client.post(f"/v1/deployments/{dep}/runsync", json={"input": PROMPT}, headers=auth(api_key))
    assert resp.status_code == 200, resp.json
    state = requests.get(f"{os.environ['RUNPOD_API_BASE_URL']}/_sim/state", timeout=5).json()
    account = next(a for a in state["accounts"] if a["api_key"] == api_key)
    job = next(j for j in account["jobs"] if j["id"] == resp.json["job_id"])
    assert job["s3Config"] == {
        "accessId": "AKIAOUTPUT",
        "accessSecret": "<redacted>",
        "bucketName": "my-outputs",
        "endpointUrl": "http://127.0.0.1:9000",
    }


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"user_aws_access_key_id": "AKIA"}, "output_s3_url requires user_aws_secret_access_key"),
        ({}, "output_s3_url requires user_aws_access_key_id"),
    ],
)
def test_an_output_bucket_needs_its_keys(intake_client: Any, extra: dict[str, str], problem: str) -> None:
    body = {"hf_model_id": "org/model", "output_s3_url": "s3://my-outputs", **extra}
    resp = intake_client.post("/v1/deployments", json=body, headers=auth(key()))
    assert resp.status_code == 400
    assert problem in str(resp.json["error"]["details"])

"""Job webhooks and the job watch (issue 11): a job's end becomes one signed delivery, and a job nobody polls is
followed to its end by the jobs function, against the emulators, the Runpod simulator's instant workers and the jobs
and webhooks functions serving in this process (tests/integration/conftest.py ``intake_env``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import requests
from google.cloud import firestore
from standardwebhooks.webhooks import Webhook

from shared.crypto import Sealer, tenant_id
from shared.jobs.records import JOBS, InputSummary, JobPricing, JobStore
from shared.runpod.client import RunpodConnector
from shared.store import DEPLOYMENTS, DeploymentStore
from shared.topology import QUEUE_JOB_WATCH
from tests.support.jobs import PROMPT, auth, sim_requests, usage_of
from tests.support.receiver import Receiver
from tests.support.waiting import eventually, no_check_pending, no_webhook_pending, tasks_in

pytestmark = pytest.mark.usefixtures("intake_env")


def signed(intake_client: Any, api_key: str, call: dict[str, Any]) -> dict[str, Any]:
    """The delivery's body, verified with the tenant's secret by the standardwebhooks package (not our code)."""
    secret = intake_client.get("/v1/webhook-secret", headers=auth(api_key)).json["secret"]
    return dict(Webhook(secret).verify(call["body"], call["headers"]))


def job_deliveries(intake_client: Any, api_key: str, dep: str) -> list[dict[str, Any]]:
    answer = intake_client.get(f"/v1/deployments/{dep}/deliveries", headers=auth(api_key))
    assert answer.status_code == 200, answer.json
    return [d for d in answer.json["deliveries"] if d["event_type"].startswith("job.")]


def test_a_run_nobody_polls_is_followed_to_its_end_and_announced_once(
    intake_client: Any, db: firestore.Client, ready: Any, receiver: Receiver, job_functions: str
) -> None:
    api_key, dep = ready()
    resp = intake_client.post(
        f"/v1/deployments/{dep}/run", json={"input": PROMPT, "webhook_url": receiver.url}, headers=auth(api_key)
    )
    assert resp.status_code == 202, resp.json
    job_id = resp.json["job_id"]

    (call,) = receiver.wait(1)  # no GET: the job watch saw the end
    sent = signed(intake_client, api_key, call)
    assert sent["type"] == "job.completed"
    assert sent["data"]["job_id"] == job_id and sent["data"]["deployment_id"] == dep
    assert sent["data"]["status"] == "COMPLETED"
    assert sent["data"]["output"] == {"stub": True, "input": PROMPT}
    assert sent["data"]["input_summary"]["prompt_chars"] == len(PROMPT["prompt"])
    raw = call["body"].decode()
    assert api_key not in raw and tenant_id(os.environ["TENANT_PEPPER"], api_key) not in raw

    stored = db.collection(DEPLOYMENTS).document(dep).collection(JOBS).document(job_id).get().to_dict()
    assert stored["status"] == "COMPLETED" and stored["counted"] is True
    usage = usage_of(intake_client, api_key, dep)
    assert (usage["requests"], usage["completed"]) == (1, 1)  # counted without anyone polling

    (delivery,) = eventually(lambda: [d for d in job_deliveries(intake_client, api_key, dep) if d["attempts"]])
    assert (delivery["event_type"], delivery["job_id"], delivery["state"]) == ("job.completed", job_id, "delivered")
    assert delivery["webhook_id"] == call["headers"]["webhook-id"]
    job = intake_client.get(f"/v1/deployments/{dep}/jobs/{job_id}", headers=auth(api_key)).json
    assert job["status"] == "COMPLETED" and job["webhook_url"] == receiver.url
    # The watch's checks of the job (the nudge, the schedule's first) have run, and then the attempts they (and this
    # GET) could have scheduled: no second delivery.
    no_check_pending(job_functions, dep, job_id)
    no_webhook_pending(job_functions, dep)
    assert len(receiver.calls) == 1
    assert len(job_deliveries(intake_client, api_key, dep)) == 1

    path = f"/v1/deployments/{dep}/deliveries/{delivery['delivery_id']}/redeliver"
    again = intake_client.post(path, headers=auth(api_key))
    assert again.status_code == 202, again.json
    _, second = receiver.wait(2)
    assert second["headers"]["webhook-id"] == call["headers"]["webhook-id"] and second["body"] == call["body"]
    redelivered = [d for d in job_deliveries(intake_client, api_key, dep) if d["redelivery_of"]]
    assert [(d["job_id"], d["event_type"]) for d in redelivered] == [(job_id, "job.completed")]


def test_a_runsync_that_ends_in_its_answer_is_announced_with_its_output(
    intake_client: Any, ready: Any, receiver: Receiver
) -> None:
    api_key, dep = ready()
    body = {"input": PROMPT, "webhook_url": receiver.url}
    resp = intake_client.post(f"/v1/deployments/{dep}/runsync?wait=10000", json=body, headers=auth(api_key))
    assert resp.status_code == 200 and resp.json["status"] == "COMPLETED", resp.json
    (call,) = receiver.wait(1)
    sent = signed(intake_client, api_key, call)
    assert (sent["type"], sent["data"]["job_id"]) == ("job.completed", resp.json["job_id"])
    assert sent["data"]["output"] == resp.json["output"]
    assert sent["data"]["execution_ms"] == resp.json["metrics"]["execution_ms"]


def test_a_cancelled_job_is_announced_as_cancelled(
    intake_client: Any, ready: Any, receiver: Receiver, job_functions: str
) -> None:
    api_key, dep = ready(workers_max=0)  # no worker ever starts: the job stays IN_QUEUE until cancelled
    body = {"input": PROMPT, "webhook_url": receiver.url}
    job_id = intake_client.post(f"/v1/deployments/{dep}/run", json=body, headers=auth(api_key)).json["job_id"]
    # The watch has looked at it (its first check scheduled the second): still queued, nothing sent.
    eventually(lambda: tasks_in(QUEUE_JOB_WATCH, f"job-{dep}-{job_id}-1"))
    no_webhook_pending(job_functions, dep)
    assert receiver.calls == []
    cancelled = intake_client.post(f"/v1/deployments/{dep}/jobs/{job_id}/cancel", headers=auth(api_key))
    assert cancelled.json["status"] == "CANCELLED", cancelled.json
    (call,) = receiver.wait(1)
    sent = signed(intake_client, api_key, call)
    assert (sent["type"], sent["data"]["status"], sent["data"]["output"]) == ("job.cancelled", "CANCELLED", None)


def test_a_job_without_a_webhook_is_still_counted_without_polling(intake_client: Any, ready: Any) -> None:
    api_key, dep = ready()
    resp = intake_client.post(f"/v1/deployments/{dep}/run", json={"input": PROMPT}, headers=auth(api_key))
    assert resp.status_code == 202, resp.json
    usage = eventually(lambda: (u := usage_of(intake_client, api_key, dep))["completed"] == 1 and u)
    assert (usage["requests"], usage["completed"]) == (1, 1)
    assert job_deliveries(intake_client, api_key, dep) == []


def test_a_job_whose_endpoint_is_gone_stops_being_followed(intake_client: Any, ready: Any, job_functions: str) -> None:
    api_key, dep = ready(workers_max=0)
    job_id = intake_client.post(f"/v1/deployments/{dep}/run", json={"input": PROMPT}, headers=auth(api_key)).json[
        "job_id"
    ]
    runpod = os.environ["RUNPOD_API_BASE_URL"]
    endpoint = intake_client.get(f"/v1/deployments/{dep}", headers=auth(api_key)).json["endpoint_id"]
    requests.delete(f"{runpod}/v2/serverless/{endpoint}", headers=auth(api_key), timeout=5).raise_for_status()
    deleted = sim_requests(api_key)
    # Two looks at Runpod: the check Runpod's call on the job's end (cancelled by the delete) asked for, and the
    # schedule's first; each finds the job gone.
    checked = eventually(lambda: (n := sim_requests(api_key)) >= deleted + 2 and n)
    no_check_pending(job_functions, dep, job_id)  # no next check (2 s, then 3 s later) is scheduled
    assert sim_requests(api_key) == checked
    job = intake_client.get(f"/v1/deployments/{dep}/jobs/{job_id}", headers=auth(api_key)).json
    assert job["status"] == "IN_QUEUE"  # what was last seen: never a state Runpod did not report


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://example.com/hook", "https"),
        ("https://10.0.0.8/hook", "private"),
        ("https://user:pw@example.com/hook", "credentials"),
        ("not a url", "absolute"),
        ("https://example.com:99999/hook", "port"),
        ("https://example.com:abc/hook", "port"),
    ],
)
def test_a_webhook_url_that_is_not_public_https_is_400_and_never_reaches_runpod(
    intake_client: Any, ready: Any, url: str, problem: str
) -> None:
    api_key, dep = ready()
    before = sim_requests(api_key)
    for route in ("run", "runsync"):
        resp = intake_client.post(
            f"/v1/deployments/{dep}/{route}", json={"input": PROMPT, "webhook_url": url}, headers=auth(api_key)
        )
        assert resp.status_code == 400, resp.json
        error = resp.json["error"]
        assert error["code"] == "invalid_request"
        assert [d["field"] for d in error["details"]] == ["webhook_url"]
        assert problem in error["details"][0]["problem"]
    assert sim_requests(api_key) == before


# --- Runpod's call on a job's end (the callback function's job-ended route) ------------------------------------------


@pytest.fixture
def callback(job_functions: str) -> Callable[[str], str]:
    """The URL of a callback route of one deployment (``<id>/job-ended...``)."""
    return lambda path: f"{job_functions}/callback/v1/deployments/{path}"


def test_runpods_call_on_a_job_s_end_is_accepted_by_the_callback(
    intake_client: Any, ready: Any, callback: Callable[[str], str]
) -> None:
    api_key, dep = ready()
    body = {"input": PROMPT}
    job_id = intake_client.post(f"/v1/deployments/{dep}/runsync", json=body, headers=auth(api_key)).json["job_id"]
    job = eventually(
        lambda: next(
            (j for a in state_of(api_key) for j in a["jobs"] if j["id"] == job_id and j.get("webhookCalls")), None
        )
    )
    assert job["webhook"].startswith(callback(f"{dep}/job-ended?token="))
    assert job["webhookCalls"] == [200]


def state_of(api_key: str) -> list[dict[str, Any]]:
    state = requests.get(f"{os.environ['RUNPOD_API_BASE_URL']}/_sim/state", timeout=5).json()
    return [a for a in state["accounts"] if a["api_key"] == api_key]


def test_the_call_alone_records_the_end_of_a_job_nothing_else_follows(
    db: firestore.Client, ready: Any, callback: Callable[[str], str]
) -> None:
    """A job submitted straight to Runpod with our job-ended URL and a record but no scheduled check (as if every
    check were lost): Runpod's call on its end is what records it."""
    api_key, dep = ready()
    doc = DeploymentStore(db).get(dep)
    assert doc is not None and doc.runpod.endpoint_id
    token = Sealer(os.environ["SEALING_KEY"]).job_ended_token(dep)
    client = RunpodConnector(os.environ["RUNPOD_API_BASE_URL"], os.environ["RUNPOD_ENDPOINT_BASE_URL"], 10)
    runpod = client.client(api_key)
    job = runpod.run(doc.runpod.endpoint_id, PROMPT, webhook=callback(f"{dep}/job-ended?token={token}"))
    jobs = JobStore(db, timedelta(days=1))
    jobs.record_submitted(dep, doc.owner, job, InputSummary(prompt_chars=len(PROMPT["prompt"])), JobPricing())
    ended = eventually(lambda: (r := jobs.get(dep, job.id)) is not None and r.final and r)
    assert ended.status == "COMPLETED" and ended.counted


def test_a_call_with_a_wrong_token_or_no_job_id_is_refused(ready: Any, callback: Callable[[str], str]) -> None:
    _, dep = ready()
    token = Sealer(os.environ["SEALING_KEY"]).job_ended_token(dep)
    other = Sealer(os.environ["SEALING_KEY"]).job_ended_token("0" * 32)
    forged = requests.post(callback(f"{dep}/job-ended?token={other}"), json={"id": "job-1"}, timeout=5)
    assert (forged.status_code, forged.json()["error"]["code"]) == (401, "invalid_signature")
    missing = requests.post(callback(f"{dep}/job-ended"), json={"id": "job-1"}, timeout=5)
    assert missing.status_code == 401
    for bad in ({}, {"id": "../x"}, {"id": 7}):
        refused = requests.post(callback(f"{dep}/job-ended?token={token}"), json=bad, timeout=5)
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid_report")


def test_an_end_recorded_without_its_webhook_is_announced_by_the_next_check(
    db: firestore.Client, ready: Any, receiver: Receiver, intake_client: Any, job_functions: str
) -> None:
    """An observer that stopped between recording the end and making the delivery (a crash): the job's next check
    finds it final and makes the delivery, the output asked of Runpod again."""
    from shared.config import BackgroundSettings, get_settings
    from shared.wiring import firestore_client, job_ends
    from shared.wiring import task_scheduler as tasks_of
    from tests.integration.conftest import functions_base_url

    api_key, dep = ready()
    doc = DeploymentStore(db).get(dep)
    assert doc is not None and doc.runpod.endpoint_id
    runpod = RunpodConnector(os.environ["RUNPOD_API_BASE_URL"], os.environ["RUNPOD_ENDPOINT_BASE_URL"], 10)
    job = runpod.client(api_key).runsync(doc.runpod.endpoint_id, PROMPT, 10_000)
    assert job.final
    summary = InputSummary(prompt_chars=len(PROMPT["prompt"]))
    with functions_base_url(job_functions):
        settings = get_settings(BackgroundSettings)
        ends = job_ends(settings, firestore_client(settings), tasks_of(settings))
    record = ends.jobs.record_submitted(dep, doc.owner, job, summary, JobPricing(), webhook_url=receiver.url)
    assert record.final and receiver.calls == []  # the end is recorded; nothing announced it

    ends.follow(record, 0)  # the check its answer's observer had scheduled before stopping

    (call,) = receiver.wait(1)
    sent = signed(intake_client, api_key, call)
    assert (sent["type"], sent["data"]["job_id"]) == ("job.completed", job.id)
    assert sent["data"]["output"] == {"stub": True, "input": PROMPT}  # from Runpod, which still keeps it

"""Job webhooks and the job watch (issue 11): a job's end becomes one signed delivery, and a job nobody polls is
followed to its end by the jobs function, against the emulators, the Runpod simulator's instant workers and the jobs
and webhooks functions serving in this process (tests/integration/conftest.py ``intake_env``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from google.cloud import firestore
from standardwebhooks.webhooks import Webhook

from shared.crypto import tenant_id
from shared.jobs import JOBS
from shared.store import DEPLOYMENTS
from tests.support.jobs import PROMPT, auth, sim_requests, usage_of
from tests.support.receiver import Receiver

pytestmark = pytest.mark.usefixtures("intake_env")


def eventually(probe: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def signed(intake_client: Any, api_key: str, call: dict[str, Any]) -> dict[str, Any]:
    """The delivery's body, verified with the tenant's secret by the standardwebhooks package (not our code)."""
    secret = intake_client.get("/v1/webhook-secret", headers=auth(api_key)).json["secret"]
    return dict(Webhook(secret).verify(call["body"], call["headers"]))


def job_deliveries(intake_client: Any, api_key: str, dep: str) -> list[dict[str, Any]]:
    answer = intake_client.get(f"/v1/deployments/{dep}/deliveries", headers=auth(api_key))
    assert answer.status_code == 200, answer.json
    return [d for d in answer.json["deliveries"] if d["event_type"].startswith("job.")]


def test_a_run_nobody_polls_is_followed_to_its_end_and_announced_once(
    intake_client: Any, db: firestore.Client, ready: Any, receiver: Receiver
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
    time.sleep(1.5)  # the watch's next checks (and this GET) make no second delivery
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


def test_a_cancelled_job_is_announced_as_cancelled(intake_client: Any, ready: Any, receiver: Receiver) -> None:
    api_key, dep = ready(workers_max=0)  # no worker ever starts: the job stays IN_QUEUE until cancelled
    body = {"input": PROMPT, "webhook_url": receiver.url}
    job_id = intake_client.post(f"/v1/deployments/{dep}/run", json=body, headers=auth(api_key)).json["job_id"]
    time.sleep(1.5)  # the watch has looked at it: still queued, nothing sent
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


def test_a_job_whose_endpoint_is_gone_stops_being_followed(intake_client: Any, ready: Any) -> None:
    api_key, dep = ready(workers_max=0)
    job_id = intake_client.post(f"/v1/deployments/{dep}/run", json={"input": PROMPT}, headers=auth(api_key)).json[
        "job_id"
    ]
    runpod = os.environ["RUNPOD_API_BASE_URL"]
    endpoint = intake_client.get(f"/v1/deployments/{dep}", headers=auth(api_key)).json["endpoint_id"]
    requests.delete(f"{runpod}/v2/serverless/{endpoint}", headers=auth(api_key), timeout=5).raise_for_status()
    deleted = sim_requests(api_key)
    checked = eventually(lambda: (n := sim_requests(api_key)) > deleted and n)  # the check that found it gone
    time.sleep(3.5)  # past the checks that would come next (2 s, then 3 s)
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

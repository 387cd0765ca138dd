"""A budget per deployment (issue 18): ``max_cost_usd`` at 80 % warns, at 100 % stops the deployment, once per
crossing, checked where a job's end is recorded; ``PATCH /v1/deployments/{id}`` raises or clears it. Against the
real Firestore, Pub/Sub and Cloud Tasks emulators and the Runpod simulator."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from google.cloud import firestore, pubsub_v1

from shared.config import BackgroundSettings, get_settings
from shared.deployments.events import parse_message
from shared.models import Usage
from shared.store import DEPLOYMENTS
from shared.topology import TOPIC_DEPLOYMENT_EVENTS
from shared.webhooks.steps import dispatch_event
from shared.wiring import webhook_deps
from tests.support.jobs import PROMPT, auth, key, write_ready
from tests.support.waiting import eventually

pytestmark = pytest.mark.usefixtures("intake_env")


class EventTap:
    """Every message on deployment-events, by deployment (a pull subscription of this test module)."""

    def __init__(self) -> None:
        self._subscriber = pubsub_v1.SubscriberClient()
        project = os.environ["GOOGLE_CLOUD_PROJECT"]
        self._name = self._subscriber.subscription_path(project, f"tap-budget-{uuid.uuid4().hex[:12]}")
        self._subscriber.create_subscription(
            name=self._name, topic=f"projects/{project}/topics/{TOPIC_DEPLOYMENT_EVENTS}"
        )
        self._seen: list[Any] = []
        self._lock = threading.Lock()

    def of(self, deployment_id: str) -> list[Any]:
        with self._lock:
            response = self._subscriber.pull(subscription=self._name, max_messages=100, timeout=5)
            if response.received_messages:
                self._subscriber.acknowledge(
                    subscription=self._name, ack_ids=[m.ack_id for m in response.received_messages]
                )
            self._seen += [m.message for m in response.received_messages]
            return [m for m in self._seen if m.attributes.get("ce-subject") == deployment_id]

    def types(self, deployment_id: str) -> list[str]:
        """The event types of the deployment, one per event id (two observers of one crossing may both publish it,
        under the same ce-id: subscribers dedupe by it)."""
        by_id = {m.attributes["ce-id"]: m.attributes["ce-type"] for m in self.of(deployment_id)}
        return [kind.removeprefix("visgate.deployment.") for kind in by_id.values()]

    def close(self) -> None:
        self._subscriber.delete_subscription(subscription=self._name)


@pytest.fixture(scope="module")
def events(intake_env: None) -> Iterator[EventTap]:
    tap = EventTap()
    yield tap
    tap.close()


def _budgeted(db: firestore.Client, intake_client: Any, spent: float, budget: float = 1.0) -> tuple[str, str]:
    """A ready deployment with a budget of ``budget`` USD of which ``spent`` is used, and a webhook subscriber."""
    api_key = key()
    deployment_id = write_ready(
        db,
        api_key,
        max_cost_usd=budget,
        usage=Usage(estimated_cost_usd=spent),
        user_webhook_url="http://127.0.0.1:9/hooks",
    )
    assert intake_client.get(f"/v1/deployments/{deployment_id}", headers=auth(api_key)).status_code == 200
    return api_key, deployment_id


def _spend(db: firestore.Client, deployment_id: str, usd: float) -> None:
    db.collection(DEPLOYMENTS).document(deployment_id).update({"usage.estimated_cost_usd": usd})


def _workers(endpoint_id: str) -> dict[str, Any]:
    state = requests.get(f"{os.environ['RUNPOD_API_BASE_URL']}/_sim/state", timeout=5).json()
    endpoints = [e for account in state["accounts"] for e in account["endpoints"] if e["id"] == endpoint_id]
    return dict(endpoints[0]["workers"])


def test_a_budget_warns_at_80_percent_and_stops_at_100_once_per_crossing(
    intake_client: Any, db: firestore.Client, events: EventTap
) -> None:
    api_key, dep = _budgeted(db, intake_client, spent=0.8)
    runsync = f"/v1/deployments/{dep}/runsync"

    # The job's end (seen in the runsync answer) crosses 80 %: one warning, the deployment keeps serving.
    assert intake_client.post(runsync, json={"input": PROMPT}, headers=auth(api_key)).status_code == 200
    warning = eventually(lambda: [m for m in events.of(dep) if m.attributes["ce-type"].endswith("budget_warning")])
    received = parse_message(dict(warning[0].attributes), warning[0].data)
    assert received.data["budget"]["threshold"] == 0.8
    assert received.data["budget"]["max_cost_usd"] == 1.0
    assert received.id == f"{dep}:budget_warning:0"
    assert intake_client.get(f"/v1/deployments/{dep}", headers=auth(api_key)).json["status"] == "ready"
    assert intake_client.post(runsync, json={"input": PROMPT}, headers=auth(api_key)).status_code == 200

    # Past 100 %: exhausted, workers to 0 on Runpod, stopped with stop_reason budget. Whoever sees a job end past it
    # first stops the deployment: this runsync's answer (200), or a job-watch check of the previous job that a
    # running stack still had in flight (then this job is refused, 409, or waits on no worker, 202).
    _spend(db, dep, 1.0)
    third = intake_client.post(f"{runsync}?wait=5000", json={"input": PROMPT}, headers=auth(api_key))
    assert third.status_code in (200, 202, 409), third.json
    view = eventually(
        lambda: (
            (v := intake_client.get(f"/v1/deployments/{dep}", headers=auth(api_key)).json)["status"] == "stopped" and v
        )
    )
    assert (view["status"], view["stop_reason"], view["max_cost_usd"]) == ("stopped", "budget", 1.0)
    endpoint_id = view["endpoint_id"]
    assert {k: _workers(endpoint_id)[k] for k in ("min", "max")} == {"min": 0, "max": 0}
    eventually(lambda: "budget_exhausted" in events.types(dep) and "stopped" in events.types(dep))
    assert events.types(dep).count("budget_warning") == 1  # once per crossing, however many jobs end past it
    assert events.types(dep).count("budget_exhausted") == 1
    refused = intake_client.post(runsync, json={"input": PROMPT}, headers=auth(api_key))
    assert (refused.status_code, refused.json["error"]["code"]) == (409, "deployment_not_ready")

    # A start is refused until the budget is raised; raised, it starts.
    start = f"/v1/deployments/{dep}/start"
    blocked = intake_client.post(start, headers=auth(api_key))
    assert (blocked.status_code, blocked.json["error"]["code"]) == (409, "budget_exhausted")
    assert blocked.json["error"]["details"] == {"max_cost_usd": 1.0, "estimated_cost_usd": 1.0}
    raised = intake_client.patch(f"/v1/deployments/{dep}", json={"max_cost_usd": 2.5}, headers=auth(api_key))
    assert raised.status_code == 200, raised.json
    assert (raised.json["deployment_id"], raised.json["max_cost_usd"]) == (dep, 2.5)
    assert intake_client.post(start, headers=auth(api_key)).status_code == 202
    view = intake_client.get(f"/v1/deployments/{dep}", headers=auth(api_key)).json
    assert view["stop_reason"] is None
    cleared = intake_client.patch(f"/v1/deployments/{dep}", json={"max_cost_usd": None}, headers=auth(api_key))
    assert cleared.status_code == 200 and cleared.json["max_cost_usd"] is None


def test_the_job_watch_enforces_the_budget_of_a_run_job(
    intake_client: Any, db: firestore.Client, events: EventTap
) -> None:
    api_key, dep = _budgeted(db, intake_client, spent=5.0, budget=5.0)
    queued = intake_client.post(f"/v1/deployments/{dep}/run", json={"input": PROMPT}, headers=auth(api_key))
    assert queued.status_code == 202
    # Nobody polls: the jobs function (Runpod's job-ended call, the job watch) records the end and stops it.
    view = eventually(
        lambda: (
            (v := intake_client.get(f"/v1/deployments/{dep}", headers=auth(api_key)).json)["status"] == "stopped" and v
        )
    )
    assert view["stop_reason"] == "budget"
    eventually(lambda: "budget_exhausted" in events.types(dep))
    # The crossing of 80 % and of 100 % in one job: both announced, each once.
    assert sorted(t for t in events.types(dep) if t.startswith("budget")) == ["budget_exhausted", "budget_warning"]


def test_budget_events_become_webhook_deliveries_whatever_webhook_events_says(
    intake_client: Any, db: firestore.Client, events: EventTap
) -> None:
    api_key, dep = _budgeted(db, intake_client, spent=0.9)
    assert (
        intake_client.post(f"/v1/deployments/{dep}/runsync", json={"input": PROMPT}, headers=auth(api_key)).status_code
        == 200
    )
    (message,) = eventually(lambda: [m for m in events.of(dep) if m.attributes["ce-type"].endswith("budget_warning")])
    deps = webhook_deps(get_settings(BackgroundSettings))

    outcome = dispatch_event(parse_message(dict(message.attributes), message.data), deps)

    # A running local stack's webhooks function takes the same event from its own subscription: whoever is first
    # makes the delivery, once.
    assert "scheduled" in outcome or "exists already" in outcome, outcome
    deliveries = intake_client.get(f"/v1/deployments/{dep}/deliveries", headers=auth(api_key)).json["deliveries"]
    (delivery,) = [d for d in deliveries if d["event_type"] == "deployment.budget_warning"]
    record = deps.records.get(delivery["delivery_id"])
    assert record is not None
    body = json.loads(record.data["body"])
    assert body["type"] == "deployment.budget_warning"
    assert body["data"]["budget"]["threshold"] == 0.8


@pytest.mark.parametrize(
    "body",
    [{"max_cost_usd": 0}, {"max_cost_usd": -1}, {"max_cost_usd": "5"}, {}, {"max_cost_usd": 1, "workers_min": 2}],
)
def test_a_bad_budget_change_is_400(intake_client: Any, db: firestore.Client, body: dict[str, Any]) -> None:
    api_key, dep = _budgeted(db, intake_client, spent=0.0)
    resp = intake_client.patch(f"/v1/deployments/{dep}", json=body, headers=auth(api_key))
    assert resp.status_code == 400
    assert resp.json["error"]["code"] == "invalid_request"


def test_a_create_takes_a_budget(intake_client: Any) -> None:
    api_key = key()
    created = intake_client.post(
        "/v1/deployments", json={"hf_model_id": "org/m", "max_cost_usd": 12.5}, headers=auth(api_key)
    )
    assert created.status_code == 202
    view = intake_client.get(f"/v1/deployments/{created.json['deployment_id']}", headers=auth(api_key)).json
    assert view["max_cost_usd"] == 12.5
    bad = intake_client.post("/v1/deployments", json={"hf_model_id": "org/m", "max_cost_usd": 0}, headers=auth(api_key))
    assert bad.status_code == 400
    assert bad.json["error"]["details"][0]["field"] == "max_cost_usd"

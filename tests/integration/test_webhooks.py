"""Webhooks end to end on the real emulators: the webhooks function served in this process (short retry schedule),
its Cloud Tasks through the Cloud Tasks emulator, a receiver on 127.0.0.1, signatures checked with the
``standardwebhooks`` package, and the intake routes (secret, rotation, deliveries, redelivery, client token).

Events are POSTed to the function as the local host delivers Pub/Sub pushes (not published on the shared topic, where
a running stack's own webhooks function would take them too); tests/integration/test_notify_stack.py covers the
published path.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from functions_framework import create_app
from google.cloud import firestore
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from werkzeug.serving import make_server

from local import bootstrap, processes
from local.functions_host import create_host_app
from scripts import event_examples
from shared import topology
from shared.crypto import tenant_id
from shared.deployments.events import lifecycle_event, pubsub_message
from shared.document import Deployment
from shared.envelopes import TaskDelivery
from shared.lifecycle import Status
from shared.store import DEPLOYMENTS, utcnow
from shared.webhooks.records import WEBHOOK_DELIVERIES, DeliveryRecords, fresh_delivery_id
from shared.webhooks.secrets import WEBHOOK_SECRETS
from shared.webhooks.steps import WebhookAttempt, deliver
from tests.integration.conftest import register_runpod_key
from tests.support.receiver import Receiver
from tests.support.waiting import eventually, no_webhook_pending

REPO = Path(__file__).resolve().parents[2]
RETRY_DELAY_S = 0.3


@dataclass(frozen=True)
class Hooks:
    url: str
    intake: Any  # a test client of an intake wired to the same emulators and this host
    db: firestore.Client


@pytest.fixture(scope="module")
def hooks(intake_env: None, tasks_emulator: str) -> Iterator[Hooks]:
    """The webhooks function in this process, tasks coming back to it through the emulator; an intake beside it."""
    from shared.config import BackgroundSettings, get_settings

    port = processes.free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "FUNCTIONS_BASE_URL": base,
        "CLOUD_TASKS_EMULATOR_HOST": tasks_emulator,
        "WEBHOOK_RETRY_SCHEDULE_S": ",".join([str(RETRY_DELAY_S)] * 3),
        "WEBHOOK_TIMEOUT_S": "1",
        "ALLOW_HTTP_LOOPBACK_WEBHOOKS": "true",
        "FIREBASE_AUTH_EMULATOR_HOST": os.environ.get("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9099"),
    }
    project = os.environ["GOOGLE_CLOUD_PROJECT"]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        get_settings.cache_clear()
        bootstrap.create_queues(topology, project, get_settings(BackgroundSettings).region, tasks_emulator)
        app = create_host_app([topology.function("webhooks")], REPO / "functions", project)
        server = make_server("127.0.0.1", port, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        intake = create_app("intake", f"{REPO}/functions/intake/main.py", "http").test_client()
        try:
            yield Hooks(base, intake, firestore.Client(project=project))
        finally:
            server.shutdown()
            get_settings.cache_clear()


def account() -> tuple[str, str, dict[str, str]]:
    """A Runpod key the simulator knows (the API verifies every new key with Runpod), its tenant and auth header."""
    api_key = register_runpod_key(os.environ["RUNPOD_API_BASE_URL"], f"rp_test_{uuid.uuid4().hex}")
    return api_key, tenant_id(os.environ["TENANT_PEPPER"], api_key), {"Authorization": f"Bearer {api_key}"}


def deployment(hooks: Hooks, owner: str, url: str, status: Status, **fields: Any) -> dict[str, Any]:
    """A deployment document in ``status`` (written directly: no lifecycle event reaches the shared topic)."""
    doc = event_examples.example_document(status) | {"deployment_id": uuid.uuid4().hex, "owner": owner}
    doc |= {"user_webhook_url": url, "phase_timestamps": {status.value: utcnow()}, "updated_at": utcnow(), **fields}
    hooks.db.collection(DEPLOYMENTS).document(doc["deployment_id"]).set(doc)
    return doc


def push(hooks: Hooks, doc: dict[str, Any]) -> int:
    """POST the Pub/Sub push of the document's lifecycle event to the function, as the emulator would."""
    data, attributes = pubsub_message(lifecycle_event(Deployment.from_firestore(doc)))
    message = {"data": base64.b64encode(data).decode(), "attributes": attributes, "messageId": uuid.uuid4().hex}
    message["publishTime"] = utcnow().isoformat()
    body = {"message": message, "subscription": "projects/p/subscriptions/webhooks-push"}
    answer = requests.post(f"{hooks.url}/webhooks/_pubsub/deployment-events", json=body, timeout=10)
    return answer.status_code


def deliveries(hooks: Hooks, headers: dict[str, str], deployment_id: str) -> list[dict[str, Any]]:
    answer = hooks.intake.get(f"/v1/deployments/{deployment_id}/deliveries", headers=headers)
    assert answer.status_code == 200, answer.json
    return list(answer.json["deliveries"])


def verify(secret: str, call: dict[str, Any]) -> dict[str, Any]:
    """Verify with the standardwebhooks package (not our code); the parsed body."""
    return dict(Webhook(secret).verify(call["body"], call["headers"]))


def test_ready_becomes_one_signed_delivery_without_secrets(hooks: Hooks, receiver: Receiver) -> None:
    api_key, tenant, headers = account()
    doc = deployment(hooks, tenant, receiver.url, Status.READY)
    assert push(hooks, doc) == 204
    (call,) = receiver.wait(1)
    secret = hooks.intake.get("/v1/webhook-secret", headers=headers).json["secret"]
    assert secret.startswith("whsec_")
    sent = verify(secret, call)
    assert sent["type"] == "deployment.ready"
    assert sent["data"]["deployment_id"] == doc["deployment_id"]
    assert sent["data"]["usage_example"]["url"].endswith("/runsync")
    raw = call["body"].decode()
    assert api_key not in raw and secret not in raw and tenant not in raw
    (delivery,) = eventually(lambda: [d for d in deliveries(hooks, headers, doc["deployment_id"]) if d["attempts"]])
    assert delivery["state"] == "delivered"
    assert delivery["event_type"] == "deployment.ready"
    assert delivery["webhook_id"] == call["headers"]["webhook-id"]
    (attempt,) = delivery["attempts"]
    assert attempt["status_code"] == 200 and attempt["latency_ms"] >= 0 and attempt["error"] is None


def test_500_500_then_200_is_one_delivery_with_three_attempts(hooks: Hooks, receiver: Receiver) -> None:
    _, tenant, headers = account()
    receiver.script = [500, 500, 200]
    doc = deployment(hooks, tenant, receiver.url, Status.FAILED)
    push(hooks, doc)
    calls = receiver.wait(3)
    (delivery,) = eventually(
        lambda: [d for d in deliveries(hooks, headers, doc["deployment_id"]) if d["state"] == "delivered"]
    )
    no_webhook_pending(hooks.url, doc["deployment_id"])  # final, and no attempt left in the queue
    assert len(receiver.calls) == 3
    assert len({call["headers"]["webhook-id"] for call in calls}) == 1  # stable across retries
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
    assert [a["error"] for a in delivery["attempts"]] == ["HTTP 500", "HTTP 500", None]


def test_410_stops_for_good(hooks: Hooks, receiver: Receiver) -> None:
    _, tenant, headers = account()
    receiver.script = [410]
    doc = deployment(hooks, tenant, receiver.url, Status.DELETED)
    push(hooks, doc)
    receiver.wait(1)
    (delivery,) = eventually(
        lambda: [d for d in deliveries(hooks, headers, doc["deployment_id"]) if d["state"] == "stopped"]
    )
    no_webhook_pending(hooks.url, doc["deployment_id"])  # final, and no attempt left in the queue
    assert len(receiver.calls) == 1
    assert [a["status_code"] for a in delivery["attempts"]] == [410]


def test_every_attempt_failing_ends_failed_after_the_schedule(hooks: Hooks, receiver: Receiver) -> None:
    _, tenant, headers = account()
    receiver.script = ["slow", 503, 503, 503]  # a timeout first: retried like any other failure
    doc = deployment(hooks, tenant, receiver.url, Status.READY)
    push(hooks, doc)
    (delivery,) = eventually(
        lambda: [d for d in deliveries(hooks, headers, doc["deployment_id"]) if d["state"] == "failed"], 30
    )
    assert [a["status_code"] for a in delivery["attempts"]] == [None, 503, 503, 503]
    assert "no answer within 1 s" in delivery["attempts"][0]["error"]


def test_a_redelivered_event_makes_no_second_delivery(hooks: Hooks, receiver: Receiver) -> None:
    _, tenant, headers = account()
    doc = deployment(hooks, tenant, receiver.url, Status.READY)
    assert push(hooks, doc) == 204
    assert push(hooks, doc) == 204  # Pub/Sub delivers again (another message id, the same event)
    receiver.wait(1)
    eventually(lambda: [d for d in deliveries(hooks, headers, doc["deployment_id"]) if d["state"] == "delivered"])
    assert push(hooks, doc) == 204  # and once more after it was delivered
    no_webhook_pending(hooks.url, doc["deployment_id"])  # the attempts the pushes scheduled again have run
    assert len(receiver.calls) == 1
    assert len(deliveries(hooks, headers, doc["deployment_id"])) == 1


def test_default_events_and_opt_in(hooks: Hooks, receiver: Receiver) -> None:
    _, tenant, headers = account()
    quiet = deployment(hooks, tenant, receiver.url, Status.LOADING_MODEL)
    push(hooks, quiet)  # not a default event
    progress = deployment(hooks, tenant, receiver.url, Status.DOWNLOADING_MODEL, webhook_events=["downloading_model"])
    push(hooks, progress)
    (call,) = receiver.wait(1)
    assert json.loads(call["body"])["type"] == "deployment.downloading_model"
    eventually(lambda: [d for d in deliveries(hooks, headers, progress["deployment_id"]) if d["state"] == "delivered"])
    no_webhook_pending(hooks.url, progress["deployment_id"])
    no_webhook_pending(hooks.url, quiet["deployment_id"])
    assert len(receiver.calls) == 1
    assert deliveries(hooks, headers, quiet["deployment_id"]) == []
    ready = deployment(hooks, tenant, receiver.url, Status.READY, webhook_events=["downloading_model"])
    assert push(hooks, ready) == 204  # opted into progress only: the push's answer comes after its decision
    assert deliveries(hooks, headers, ready["deployment_id"]) == []
    no_webhook_pending(hooks.url, ready["deployment_id"])
    assert len(receiver.calls) == 1


def test_signatures_verify_before_and_after_a_rotation(hooks: Hooks, receiver: Receiver) -> None:
    _, tenant, headers = account()
    first = hooks.intake.get("/v1/webhook-secret", headers=headers).json
    assert hooks.intake.get("/v1/webhook-secret", headers=headers).json == first  # created once
    push(hooks, deployment(hooks, tenant, receiver.url, Status.READY))
    (before,) = receiver.wait(1)
    verify(first["secret"], before)

    rotated = hooks.intake.post("/v1/webhook-secret/rotate", headers=headers)
    assert rotated.status_code == 200
    second = rotated.json
    assert second["secret"] != first["secret"]
    assert abs(_seconds_from_now(second["previous_valid_until"]) - 24 * 3600) < 120
    assert hooks.intake.get("/v1/webhook-secret", headers=headers).json["secret"] == second["secret"]
    push(hooks, deployment(hooks, tenant, receiver.url, Status.READY))
    during = receiver.wait(2)[1]
    assert len(during["headers"]["webhook-signature"].split()) == 2  # both secrets sign for 24 h
    verify(first["secret"], during)
    verify(second["secret"], during)

    # After the overlap only the new secret signs.
    hooks.db.collection(WEBHOOK_SECRETS).document(tenant).update(
        {"previous_valid_until": utcnow() - timedelta(seconds=1)}
    )
    push(hooks, deployment(hooks, tenant, receiver.url, Status.READY))
    after = receiver.wait(3)[2]
    verify(second["secret"], after)
    with pytest.raises(WebhookVerificationError):
        verify(first["secret"], after)


def _seconds_from_now(iso: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(iso.replace("Z", "+00:00")) - utcnow()).total_seconds()


def test_redeliver_sends_the_same_event_again_with_the_same_webhook_id(hooks: Hooks, receiver: Receiver) -> None:
    _, tenant, headers = account()
    doc = deployment(hooks, tenant, receiver.url, Status.READY)
    push(hooks, doc)
    (first,) = receiver.wait(1)
    (original,) = eventually(lambda: [d for d in deliveries(hooks, headers, doc["deployment_id"]) if d["attempts"]])
    path = f"/v1/deployments/{doc['deployment_id']}/deliveries/{original['delivery_id']}/redeliver"
    answer = hooks.intake.post(path, headers=headers)
    assert answer.status_code == 202, answer.json
    assert answer.json["delivery_id"] != original["delivery_id"]
    assert answer.json["redelivery_of"] == original["delivery_id"]
    second = receiver.wait(2)[1]
    assert second["headers"]["webhook-id"] == first["headers"]["webhook-id"]
    assert second["body"] == first["body"]
    assert len(deliveries(hooks, headers, doc["deployment_id"])) == 2

    _, _, others = account()
    assert hooks.intake.post(path, headers=others).status_code == 404  # another tenant's deployment
    assert hooks.intake.get(f"/v1/deployments/{doc['deployment_id']}/deliveries", headers=others).status_code == 404
    unknown = f"/v1/deployments/{doc['deployment_id']}/deliveries/{fresh_delivery_id()}/redeliver"
    assert hooks.intake.post(unknown, headers=headers).json["error"]["code"] == "delivery_not_found"
    assert (
        hooks.intake.post(f"/v1/deployments/{doc['deployment_id']}/deliveries/x/redeliver", headers=headers).status_code
        == 404
    )
    assert hooks.intake.get("/v1/webhook-secret").status_code == 401


@pytest.mark.parametrize("address", ["127.0.0.1", "169.254.169.254"])
def test_a_name_resolving_to_a_private_address_is_refused_at_delivery(
    hooks: Hooks, receiver: Receiver, address: str
) -> None:
    """``rebind.example.com`` passes the intake check (a DNS name) but resolves to a private address when sent."""
    from shared.config import BackgroundSettings, get_settings
    from shared.wiring import webhook_deps

    _, tenant, _ = account()
    doc = deployment(hooks, tenant, f"https://rebind.example.com:{receiver.port}/hook", Status.READY)
    records = DeliveryRecords(hooks.db)
    delivery_id = fresh_delivery_id()
    records.create(
        {
            "delivery_id": delivery_id,
            "deployment_id": doc["deployment_id"],
            "owner": tenant,
            "event_id": "e",
            "event_type": "deployment.ready",
            "webhook_id": "msg_x",
            "url": doc["user_webhook_url"],
            "body": "{}",
            "redelivery_of": None,
        }
    )
    deps = webhook_deps(get_settings(BackgroundSettings))
    deps = type(deps)(**{**deps.__dict__, "resolver": lambda host, port: [address]})
    task = TaskDelivery(WebhookAttempt(delivery_id=delivery_id, deployment_id=doc["deployment_id"]), "t", 0, "q")
    assert "failed" in deliver(task, deps)
    record = hooks.db.collection(WEBHOOK_DELIVERIES).document(delivery_id).get().to_dict()
    assert record["state"] == "failed"
    assert record["attempts"][0]["error"].startswith("refused: the host resolves to")
    assert receiver.calls == []
    assert "duplicate" in deliver(task, deps) or "failed already" in deliver(task, deps)


@pytest.mark.parametrize("url", ["https://hooks.example.com:99999/hook", "https://hooks.example.com:abc/hook"])
def test_a_user_webhook_url_with_a_bad_port_is_400_naming_the_field(hooks: Hooks, url: str) -> None:
    _, _, headers = account()
    answer = hooks.intake.post(
        "/v1/deployments", json={"hf_model_id": "org/m", "user_webhook_url": url}, headers=headers
    )
    assert answer.status_code == 400, answer.json
    error = answer.json["error"]
    assert error["code"] == "invalid_request"
    assert [d["field"] for d in error["details"]] == ["user_webhook_url"]
    assert "port" in error["details"][0]["problem"]


@pytest.mark.parametrize("url", ["https://hooks.example.com:99999/hook", "https://hooks.example.com:abc/hook"])
def test_a_stored_url_that_cannot_be_sent_is_a_failed_attempt_not_a_crash(
    hooks: Hooks, receiver: Receiver, url: str
) -> None:
    """A URL stored before the port check (or by any other path) is recorded as a refused attempt: no 500 loop."""
    from shared.config import BackgroundSettings, get_settings
    from shared.wiring import webhook_deps

    _, tenant, _ = account()
    doc = deployment(hooks, tenant, url, Status.READY)
    delivery_id = fresh_delivery_id()
    DeliveryRecords(hooks.db).create(
        {
            "delivery_id": delivery_id,
            "deployment_id": doc["deployment_id"],
            "owner": tenant,
            "event_id": "e",
            "event_type": "deployment.ready",
            "webhook_id": "msg_port",
            "url": url,
            "body": "{}",
            "redelivery_of": None,
        }
    )
    deps = webhook_deps(get_settings(BackgroundSettings))
    task = TaskDelivery(WebhookAttempt(delivery_id=delivery_id, deployment_id=doc["deployment_id"]), "t", 0, "q")
    assert "failed" in deliver(task, deps)
    record = hooks.db.collection(WEBHOOK_DELIVERIES).document(delivery_id).get().to_dict()
    assert record["state"] == "failed"
    assert [a["error"] for a in record["attempts"]] == ["refused: the webhook URL has an invalid host or port"]


def test_intake_refuses_ssrf_targets_and_unknown_webhook_events(hooks: Hooks) -> None:
    _, _, headers = account()
    for url in ("https://169.254.169.254/x", "https://metadata.google.internal/x", "https://10.0.0.1/x"):
        body = {"hf_model_id": "org/m", "user_webhook_url": url}
        assert hooks.intake.post("/v1/deployments", json=body, headers=headers).status_code == 400
    bad = {"hf_model_id": "org/m", "user_webhook_url": "https://example.com/h", "webhook_events": ["exploded"]}
    answer = hooks.intake.post("/v1/deployments", json=bad, headers=headers)
    assert answer.status_code == 400 and answer.json["error"]["details"][0]["field"].startswith("webhook_events")
    lonely = {"hf_model_id": "org/m", "webhook_events": ["ready"]}
    assert hooks.intake.post("/v1/deployments", json=lonely, headers=headers).status_code == 400
    good = {"hf_model_id": "org/m", "user_webhook_url": "https://example.com/h", "webhook_events": ["ready", "stopped"]}
    created = hooks.intake.post("/v1/deployments", json=good, headers=headers)
    assert created.status_code == 202
    view = hooks.intake.get(f"/v1/deployments/{created.json['deployment_id']}", headers=headers).json
    assert view["webhook_events"] == ["ready", "stopped"]


def test_client_token_names_the_tenant(hooks: Hooks) -> None:
    _, tenant, headers = account()
    answer = hooks.intake.post("/v1/client-token", headers=headers)
    assert answer.status_code == 200, answer.json
    body = answer.json
    assert body["tenant"] == tenant
    assert body["project_id"] == os.environ["GOOGLE_CLOUD_PROJECT"]
    assert body["expires_in"] == 3600
    claims = json.loads(base64.urlsafe_b64decode(body["custom_token"].split(".")[1] + "=="))
    assert claims["uid"] == tenant and claims["claims"] == {"tenant": tenant}
    assert hooks.intake.post("/v1/client-token").status_code == 401


def test_new_routes_answer_as_the_openapi_document_says(hooks: Hooks, receiver: Receiver) -> None:
    from tests.integration.test_intake import _conforms

    doc = hooks.intake.get("/openapi.json").json
    _, tenant, headers = account()
    dep = deployment(hooks, tenant, receiver.url, Status.READY)
    push(hooks, dep)
    receiver.wait(1)
    (delivery,) = eventually(lambda: [d for d in deliveries(hooks, headers, dep["deployment_id"]) if d["attempts"]])
    item = f"/v1/deployments/{dep['deployment_id']}"
    redeliver = "/v1/deployments/{deployment_id}/deliveries/{delivery_id}/redeliver"
    cases = [
        ("GET", "/v1/webhook-secret", hooks.intake.get("/v1/webhook-secret", headers=headers)),
        ("GET", "/v1/webhook-secret", hooks.intake.get("/v1/webhook-secret")),
        ("POST", "/v1/webhook-secret/rotate", hooks.intake.post("/v1/webhook-secret/rotate", headers=headers)),
        ("POST", "/v1/client-token", hooks.intake.post("/v1/client-token", headers=headers)),
        ("GET", "/v1/deployments/{deployment_id}/deliveries", hooks.intake.get(f"{item}/deliveries", headers=headers)),
        (
            "POST",
            redeliver,
            hooks.intake.post(f"{item}/deliveries/{delivery['delivery_id']}/redeliver", headers=headers),
        ),
        ("POST", redeliver, hooks.intake.post(f"{item}/deliveries/{fresh_delivery_id()}/redeliver", headers=headers)),
    ]
    assert {resp.status_code for _, _, resp in cases} == {200, 202, 401, 404}
    for method, path, resp in cases:
        _conforms(doc, method, path, resp)


def test_stream_sends_a_heartbeat_and_resumes_after_last_event_id(
    hooks: Hooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.intake import stream
    from shared.store import DeploymentStore

    monkeypatch.setattr(stream, "HEARTBEAT_S", 0.3)
    _, tenant, headers = account()
    doc = deployment(hooks, tenant, "https://example.com/h", Status.LOADING_MODEL, event_seq=4)
    path = f"/v1/deployments/{doc['deployment_id']}/stream"
    with hooks.intake.get(path, headers=headers, buffered=False) as answer:
        chunks = iter(answer.response)
        text = ""
        while ": keep-alive" not in text:
            text += next(chunks).decode()
    assert "id: 4\nevent: deployment\n" in text  # the current state first, with its id
    assert text.index("id: 4") < text.index(": keep-alive")

    DeploymentStore(hooks.db).log(doc["deployment_id"], "one more line")  # event_seq 5
    with hooks.intake.get(path, headers={**headers, "Last-Event-ID": "4"}, buffered=False) as answer:
        chunks = iter(answer.response)
        text = ""
        while "event: deployment" not in text:
            text += next(chunks).decode()
    assert "id: 5\n" in text and "id: 4\n" not in text  # resumed after 4, without repeating it


def test_an_attempt_that_fails_before_sending_is_given_back_for_the_retry(hooks: Hooks, receiver: Receiver) -> None:
    from shared.config import BackgroundSettings, get_settings
    from shared.errors import RetryableError
    from shared.wiring import webhook_deps

    _, tenant, _ = account()
    doc = deployment(hooks, tenant, receiver.url, Status.READY)
    delivery_id = fresh_delivery_id()
    DeliveryRecords(hooks.db).create(
        {"delivery_id": delivery_id, "deployment_id": doc["deployment_id"], "owner": tenant, "event_id": "e",
         "event_type": "deployment.ready", "webhook_id": "msg_y", "url": receiver.url, "body": "{}",
         "redelivery_of": None}
    )  # fmt: skip
    deps = webhook_deps(get_settings(BackgroundSettings))
    task = TaskDelivery(WebhookAttempt(delivery_id=delivery_id, deployment_id=doc["deployment_id"]), "t", 0, "q")
    real = deps.secrets.get_or_create

    def unavailable(tenant: str) -> Any:
        raise RetryableError("Firestore is unavailable")

    deps.secrets.get_or_create = unavailable  # type: ignore[method-assign]
    with pytest.raises(RetryableError):
        deliver(task, deps)
    deps.secrets.get_or_create = real  # type: ignore[method-assign]
    assert "delivered" in deliver(task, deps)  # Cloud Tasks' retry of the same attempt
    assert len(receiver.calls) == 1

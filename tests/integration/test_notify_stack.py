"""Every channel that tells the user, watched through one full local run (real worker on CPU, then a delete):
lifecycle CloudEvents on ``deployment-events``, the signed webhooks, the SSE stream (and its resumption) and a
client app listening to Firestore with the Firebase JS SDK (examples/web-listener).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
from google.cloud import pubsub_v1
from standardwebhooks.webhooks import Webhook

from local.stack import DEMO_API_KEY, DEMO_MODEL
from shared.topology import TOPIC_DEPLOYMENT_EVENTS
from tests.support.stack import RunningStack
from tests.support.waiting import eventually

REPO = Path(__file__).resolve().parents[2]
LISTENER = REPO / "examples" / "web-listener" / "listen.mjs"
SCHEMA = json.loads((REPO / "docs" / "events" / "deployment-event.schema.json").read_text())
RUN = ["selecting_gpu", "creating_endpoint", "downloading_model", "loading_model", "ready", "deleting", "deleted"]
TIMEOUT_S = 240.0


@dataclass
class Run:
    deployment_id: str
    headers: dict[str, str]
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    sse: list[dict[str, Any]] = field(default_factory=list)
    sse_raw: list[str] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    listener: subprocess.CompletedProcess[str] | None = None


def sse_events(text_lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Parse an SSE stream into {"id", "event", "data"} dicts (comments kept as {"comment"})."""
    current: dict[str, Any] = {}
    for line in text_lines:
        if line == "":
            if current:
                yield current
            current = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            current[name] = value.removeprefix(" ")


@pytest.fixture(scope="module")
def run(local_stack: RunningStack) -> Iterator[Run]:
    api = local_stack.intake_url
    headers = {"Authorization": f"Bearer {DEMO_API_KEY}"}
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append({"headers": dict(self.headers), "body": body, "at": time.time()})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    project = local_stack.project
    subscriber = pubsub_v1.SubscriberClient()
    tap = subscriber.subscription_path(project, f"tap-notify-{uuid.uuid4().hex[:12]}")
    subscriber.create_subscription(name=tap, topic=f"projects/{project}/topics/{TOPIC_DEPLOYMENT_EVENTS}")
    try:
        body = {"hf_model_id": DEMO_MODEL, "user_webhook_url": f"http://127.0.0.1:{server.server_address[1]}/hook"}
        # The intake's own create step, with its hand-off to provisioning held back until the observers listen
        # (provisioning takes well under a second to leave validating).
        accepted, hand_off = _create_held(json.dumps(body).encode())
        state = Run(accepted.deployment_id, headers, webhooks=received)
        stream = threading.Thread(target=_follow_stream, args=(api, state), daemon=True)
        stream.start()
        eventually(lambda: state.sse)
        hand_off()
        env = {**os.environ, **local_stack.env}
        listener = subprocess.Popen(
            ["node", str(LISTENER), "--intake-url", api, "--api-key", DEMO_API_KEY, "--deployment-id",
             state.deployment_id, "--timeout-s", str(int(TIMEOUT_S))],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        _wait_status(api, state, "ready")
        assert requests.delete(f"{api}/v1/deployments/{state.deployment_id}", headers=headers, timeout=30).ok
        _wait_status(api, state, "deleted")
        stream.join(timeout=30)
        out, err = listener.communicate(timeout=60)
        state.listener = subprocess.CompletedProcess(listener.args, listener.returncode, out, err)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(received) < 2:
            time.sleep(0.1)
        state.events = _pull(subscriber, tap, state.deployment_id)
        yield state
    finally:
        subscriber.delete_subscription(subscription=tap)
        server.shutdown()
        server.server_close()


def _create_held(raw: bytes) -> tuple[Any, Any]:
    """Run the intake's create step in this process (against the stack's emulators) without its publish; return
    the deployment and the publish to run later."""
    from shared.config import IntakeSettings
    from shared.crypto import tenant_id
    from shared.intake import steps
    from shared.intake.auth import Caller
    from shared.intake.ratelimit import current_window
    from shared.wiring.intake import intake_clients, intake_deps

    settings = IntakeSettings()  # type: ignore[call-arg]  # the stack's environment is the session's
    deps = intake_deps(settings, intake_clients(settings))
    caller = Caller(tenant_id(settings.tenant_pepper.get_secret_value(), DEMO_API_KEY), DEMO_API_KEY)
    body = steps.parse_create_request(raw, settings)
    rate = current_window(caller.tenant, settings.rate_limit_per_minute)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(steps, "_publish_requested", lambda *_: None)
        accepted = steps.create_deployment(deps, caller, body, raw, idempotency_key=None, rate=rate)
    return accepted, lambda: steps._publish_requested(deps, accepted.deployment_id)


def _follow_stream(api: str, state: Run) -> None:
    url = f"{api}/v1/deployments/{state.deployment_id}/stream"
    with requests.get(url, headers=state.headers, stream=True, timeout=(10, 60)) as answer:
        lines = answer.iter_lines(decode_unicode=True)
        for event in sse_events(line if isinstance(line, str) else line.decode() for line in lines):
            state.sse.append(event)
            if event.get("event") == "end":
                return


def _wait_status(api: str, state: Run, status: str) -> None:
    seen: list[dict[str, Any]] = [{}]

    def reached() -> bool:
        seen[0] = requests.get(f"{api}/v1/deployments/{state.deployment_id}", headers=state.headers, timeout=10).json()
        assert seen[0]["status"] == status or seen[0]["status"] != "failed", seen[0]
        return seen[0]["status"] == status

    eventually(reached, TIMEOUT_S, interval_s=0.25, what=lambda: f"not {status} in time: {seen[0]}")


def _pull(subscriber: pubsub_v1.SubscriberClient, tap: str, deployment_id: str) -> list[Any]:
    mine: list[Any] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        answer = subscriber.pull(subscription=tap, max_messages=100, timeout=5)
        if answer.received_messages:
            subscriber.acknowledge(subscription=tap, ack_ids=[m.ack_id for m in answer.received_messages])
        mine += [m.message for m in answer.received_messages if m.message.attributes.get("ce-subject") == deployment_id]
        if {m.attributes["ce-type"] for m in mine} >= {f"visgate.deployment.{s}" for s in RUN}:
            break
    return mine


def test_one_cloudevent_per_transition_valid_against_the_schema(run: Run) -> None:
    by_id = {m.attributes["ce-id"]: m for m in run.events}  # at-least-once: repeats carry the same id
    ordered = sorted(by_id.values(), key=lambda m: m.attributes["ce-time"])
    assert [m.attributes["ce-type"].removeprefix("visgate.deployment.") for m in ordered] == RUN
    for message in ordered:
        data = json.loads(message.data)
        jsonschema.validate(
            {"attributes": dict(message.attributes), "data": data}, SCHEMA, format_checker=jsonschema.FormatChecker()
        )
        assert message.ordering_key == run.deployment_id
        assert data["status"] == message.attributes["ce-type"].removeprefix("visgate.deployment.")
        assert DEMO_API_KEY not in message.data.decode() and "owner" not in data


def test_webhooks_by_default_tell_ready_and_deleted_signed(local_stack: RunningStack, run: Run) -> None:
    secret = requests.get(f"{local_stack.intake_url}/v1/webhook-secret", headers=run.headers, timeout=10).json()
    kinds = [Webhook(secret["secret"]).verify(c["body"], c["headers"])["type"] for c in run.webhooks]
    assert sorted(kinds) == ["deployment.deleted", "deployment.ready"]
    ready = next(json.loads(c["body"]) for c in run.webhooks if b"deployment.ready" in c["body"])
    assert ready["data"]["usage_example"]["url"] == f"{ready['data']['endpoint_url']}/runsync"
    listed = requests.get(
        f"{local_stack.intake_url}/v1/deployments/{run.deployment_id}/deliveries", headers=run.headers, timeout=10
    ).json()["deliveries"]
    assert sorted(d["state"] for d in listed) == ["delivered", "delivered"]


def test_sse_shows_every_transition_in_order_then_ends(run: Run) -> None:
    changes = [e for e in run.sse if e.get("event") == "deployment"]
    statuses: list[str] = []
    for event in changes:
        status = json.loads(event["data"])["status"]
        if not statuses or statuses[-1] != status:
            statuses.append(status)
    assert statuses == ["validating", *RUN]  # the current state first, then every transition in order
    ids = [int(e["id"]) for e in changes]
    assert ids == sorted(set(ids))  # an id on every event, increasing
    assert run.sse[-1]["event"] == "end"


def test_sse_resumes_after_last_event_id_without_repeating_it(local_stack: RunningStack, run: Run) -> None:
    changes = [e for e in run.sse if e.get("event") == "deployment"]
    ready_id = next(e["id"] for e in changes if json.loads(e["data"])["status"] == "ready")
    url = f"{local_stack.intake_url}/v1/deployments/{run.deployment_id}/stream"
    resumed = _read(url, {**run.headers, "Last-Event-ID": ready_id})
    after = [e for e in resumed if e.get("event") == "deployment"]
    assert after and all(int(e["id"]) > int(ready_id) for e in after)
    assert json.loads(after[-1]["data"])["status"] == "deleted"
    at_the_end = _read(url, {**run.headers, "Last-Event-ID": changes[-1]["id"]})
    assert [e.get("event") for e in at_the_end if "event" in e] == ["end"]


def _read(url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    with requests.get(url, headers=headers, stream=True, timeout=(10, 30)) as answer:
        lines = answer.iter_lines(decode_unicode=True)
        return list(sse_events(line if isinstance(line, str) else line.decode() for line in lines))


def test_a_client_app_listens_with_the_firebase_sdk(run: Run) -> None:
    assert run.listener is not None
    assert run.listener.returncode == 0, run.listener.stderr[-3000:]
    lines = [json.loads(line) for line in run.listener.stdout.splitlines() if line.strip()]
    statuses: list[str] = []
    for line in lines:
        assert line["deployment_id"] == run.deployment_id
        if not statuses or statuses[-1] != line["status"]:
            statuses.append(line["status"])
    order = ["validating", *RUN]
    assert statuses == sorted(statuses, key=order.index)  # every change, in lifecycle order
    assert {"ready", "deleted"} <= set(statuses)

"""What one tenant, one invoke key or one address may cost (issue 18): caps held in the write, separate rate
windows, authenticated metrics, cached health, re-verified keys. Against the real Firestore and Pub/Sub emulators."""

from __future__ import annotations

import concurrent.futures
import os
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from google.cloud import firestore

from shared.lifecycle import Status
from shared.server_records import KeyVerdict
from shared.store import DEPLOYMENTS, TENANT_LIMITS, DeploymentStore, utcnow
from tests.integration.conftest import register_runpod_key

pytestmark = pytest.mark.usefixtures("intake_env")


def key() -> str:
    return register_runpod_key(os.environ["RUNPOD_API_BASE_URL"], f"rp_test_{uuid.uuid4().hex}")


def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def _tenant(api_key: str) -> str:
    from shared.crypto import tenant_id

    return tenant_id(os.environ["TENANT_PEPPER"], api_key)


def _fixed_clock() -> Callable[[], float]:
    """A clock 10 s into a future rate window that stays put: a test never straddles two windows."""
    at = (time.time() // 60 + 1) * 60 + 10
    return lambda: at


class _SpyStore(DeploymentStore):
    """The real store, counting the reads /metrics and /health make and the deployments it writes."""

    def __init__(self, db: firestore.Client) -> None:
        super().__init__(db)
        self.created: list[str] = []
        self.pings = 0
        self.counts = 0

    def create(self, new: Any, counter: Any = None, tenant_counts: Any = None) -> None:
        self.created.append(new.document.deployment_id)
        super().create(new, counter, tenant_counts)

    def ping(self) -> None:
        self.pings += 1
        super().ping()

    def counts_by_status(self, owner: str | None) -> dict[str, int]:
        self.counts += 1
        return super().counts_by_status(owner)


def _api(
    db: firestore.Client,
    store: DeploymentStore | None = None,
    clock: Callable[[], float] = time.time,
    publisher: Any = None,
    **overrides: Any,
) -> Any:
    """A test client for one more intake instance whose settings differ from the session's by ``overrides``."""
    from dataclasses import replace

    from flask import Flask, request

    from shared.config import IntakeSettings, get_settings
    from shared.wiring.intake import intake_api, intake_clients

    settings = get_settings(IntakeSettings).model_copy(update=overrides)
    clients = intake_clients(settings)
    clients = replace(clients, store=store or DeploymentStore(db), publisher=publisher or clients.publisher)
    api = intake_api(settings, clients, clock=clock)
    app = Flask("intake-under-test")
    view = lambda **_: api(request)  # noqa: E731
    for rule in ("/", "/<path:_path>"):
        app.add_url_rule(rule, "intake", view, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    return app.test_client()


def _owned(db: firestore.Client, api_key: str) -> int:
    query = db.collection(DEPLOYMENTS).where(filter=firestore.FieldFilter("owner", "==", _tenant(api_key)))
    return int(query.count().get()[0][0].value)


def _counts(db: firestore.Client, api_key: str) -> dict[str, Any]:
    return db.collection(TENANT_LIMITS).document(_tenant(api_key)).get().to_dict() or {}


class _HeldPublisher:
    """Records what would be handed on and hands nothing on: when the suite runs a local stack, its provision and
    cleanup functions would act on these deployments mid-test (fail ``org/m``, which the Hub does not have, and give
    its slot back) and move the counts these tests assert."""

    def __init__(self) -> None:
        self.published: list[str] = []  # the deployment ids

    def publish(self, topic: str, message: Any, **attributes: str) -> str:
        self.published.append(attributes.get("deployment_id", ""))
        return str(len(self.published))


# --- 2: a cap on what one tenant creates ----------------------------------------------------------------------------


def test_parallel_creates_never_pass_the_live_deployment_cap_and_a_refusal_writes_nothing(
    db: firestore.Client,
) -> None:

    api_key = key()
    store = _SpyStore(db)
    publisher = _HeldPublisher()
    clients = [_api(db, store, publisher=publisher, max_live_deployments_per_tenant=3) for _ in range(8)]

    def post(i: int) -> Any:
        return clients[i].post("/v1/deployments", json={"hf_model_id": f"org/m{i}"}, headers=auth(api_key))

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(post, range(8)))

    assert sorted(a.status_code for a in answers) == [202] * 3 + [409] * 5
    refused = [a.json for a in answers if a.status_code == 409]
    assert {r["error"]["code"] for r in refused} == {"tenant_limit_reached"}
    assert all(r["error"]["details"]["limit"] == 3 and r["error"]["details"]["current"] == 3 for r in refused)
    assert all(set(r["error"]) >= {"code", "message", "details", "request_id"} for r in refused)
    assert _owned(db, api_key) == 3
    accepted = sorted(a.json["deployment_id"] for a in answers if a.status_code == 202)
    lost = [d for d in store.created if d not in accepted]  # commits that lost a race: read again, decided again
    assert all(store.get(d) is None and store.secrets(d) is None for d in lost)
    assert sorted(publisher.published) == accepted
    assert _counts(db, api_key) == {"live": 3, "workers_min": 0}


def test_a_failed_or_deleted_deployment_gives_its_slot_back_once(db: firestore.Client) -> None:
    from shared.config import IntakeSettings, get_settings
    from shared.wiring import core

    api_key = key()
    client = _api(db, publisher=_HeldPublisher(), max_live_deployments_per_tenant=2)
    ids = [
        client.post("/v1/deployments", json={"hf_model_id": "org/m"}, headers=auth(api_key)).json["deployment_id"]
        for _ in range(2)
    ]
    third = client.post("/v1/deployments", json={"hf_model_id": "org/m"}, headers=auth(api_key))
    assert (third.status_code, third.json["error"]["code"]) == (409, "tenant_limit_reached")

    _, _, _, transitions, _ = core(get_settings(IntakeSettings))
    transitions.fail(ids[0], "internal", "test")
    transitions.fail(ids[0], "internal", "test again")  # a repeat changes nothing, gives nothing back twice
    assert _counts(db, api_key)["live"] == 1
    # Deleting a failed deployment gives nothing back again; deleting a live one does, when it is deleted.
    for deployment_id in ids:
        assert client.delete(f"/v1/deployments/{deployment_id}", headers=auth(api_key)).status_code == 202
    assert _counts(db, api_key)["live"] == 1  # `deleting` is still live: its endpoint may still run
    for deployment_id in ids:
        transitions.move(deployment_id, Status.DELETED, "gone")
    assert _counts(db, api_key) == {"live": 0, "workers_min": 0}
    assert client.post("/v1/deployments", json={"hf_model_id": "org/m"}, headers=auth(api_key)).status_code == 202


def test_the_always_on_workers_of_a_tenant_are_capped(db: firestore.Client) -> None:
    api_key = key()
    client = _api(db, publisher=_HeldPublisher(), max_workers_min_per_tenant=3)

    def create(workers_min: int) -> Any:
        body = {"hf_model_id": "org/m", "workers_min": workers_min, "workers_max": max(workers_min, 1)}
        return client.post("/v1/deployments", json=body, headers=auth(api_key))

    assert create(2).status_code == 202
    over = create(2)
    assert over.status_code == 409
    assert over.json["error"]["code"] == "tenant_limit_reached"
    assert {k: over.json["error"]["details"][k] for k in ("limit", "current")} == {"limit": 3, "current": 2}
    assert create(1).status_code == 202
    assert create(0).status_code == 202  # scale-to-zero deployments cost no always-on worker
    assert _counts(db, api_key) == {"live": 3, "workers_min": 3}


# --- 1: invoke-key traffic has its own window ----------------------------------------------------------------------


def test_invoke_key_traffic_never_locks_its_owner_out(db: firestore.Client, ready: Any) -> None:
    api_key, dep = ready()
    client = _api(db, clock=_fixed_clock(), rate_limit_per_minute=6, invoke_key_rate_limit_per_minute=8)
    created = client.post(f"/v1/deployments/{dep}/keys", headers=auth(api_key))
    assert created.status_code == 201, created.json
    invoke = created.json["key"]

    codes = [client.get(f"/v1/deployments/{dep}", headers=auth(invoke)).status_code for _ in range(10)]

    assert codes == [200] * 8 + [429] * 2
    limited = client.get(f"/v1/deployments/{dep}", headers=auth(invoke))
    assert limited.json["error"]["code"] == "rate_limited"
    assert limited.json["error"]["details"] == {"limit_per_minute": 8}
    # The owner's window saw one request (the key's creation): revoking the key and deleting still work.
    revoked = client.delete(f"/v1/deployments/{dep}/keys/{created.json['key_id']}", headers=auth(api_key))
    assert revoked.status_code == 204
    assert client.get(f"/v1/deployments/{dep}/keys", headers=auth(api_key)).status_code == 200
    assert client.delete(f"/v1/deployments/{dep}", headers=auth(api_key)).status_code == 202


# --- 12: the per-deployment invoke-key limit holds in the write ----------------------------------------------------


def test_parallel_invoke_key_creates_never_pass_the_limit(db: firestore.Client, ready: Any) -> None:
    api_key, dep = ready()
    clients = [_api(db, max_invoke_keys_per_deployment=3) for _ in range(10)]

    def create(i: int) -> Any:
        return clients[i].post(f"/v1/deployments/{dep}/keys", headers=auth(api_key))

    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(create, range(10)))

    assert sorted(a.status_code for a in answers) == [201] * 3 + [409] * 7
    assert {a.json["error"]["code"] for a in answers if a.status_code == 409} == {"too_many_invoke_keys"}
    listed = clients[0].get(f"/v1/deployments/{dep}/keys", headers=auth(api_key)).json["keys"]
    assert len(listed) == 3
    # A revocation frees its place, once.
    first = listed[0]["key_id"]
    assert clients[0].delete(f"/v1/deployments/{dep}/keys/{first}", headers=auth(api_key)).status_code == 204
    assert clients[0].delete(f"/v1/deployments/{dep}/keys/{first}", headers=auth(api_key)).status_code == 404
    assert clients[0].post(f"/v1/deployments/{dep}/keys", headers=auth(api_key)).status_code == 201
    assert clients[0].post(f"/v1/deployments/{dep}/keys", headers=auth(api_key)).status_code == 409


# --- 3: /metrics needs its token; /metrics and /health read at most so often ----------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic abc"}])
def test_metrics_refuse_anonymous_and_wrong_tokens(db: firestore.Client, headers: dict[str, str]) -> None:
    store = _SpyStore(db)
    resp = _api(db, store).get("/metrics", headers=headers)
    assert resp.status_code == 401
    assert resp.json["error"]["code"] == "unauthenticated"
    assert set(resp.json["error"]) >= {"code", "message", "request_id"}
    assert "visgate_deployments" not in resp.get_data(as_text=True)
    assert store.counts == 0  # refused before anything is counted


def test_metrics_with_the_token_are_computed_at_most_every_30_s(db: firestore.Client) -> None:
    store = _SpyStore(db)
    client = _api(db, store)
    token = {"Authorization": f"Bearer {os.environ['METRICS_TOKEN']}"}
    first = client.get("/metrics", headers=token)
    assert first.status_code == 200
    assert 'visgate_deployments{status="validating"}' in first.get_data(as_text=True)
    for _ in range(5):
        assert client.get("/metrics", headers=token).get_data() == first.get_data()
    assert store.counts == 1


def test_health_reads_firestore_at_most_every_10_s(db: firestore.Client) -> None:
    store = _SpyStore(db)
    client = _api(db, store)
    for _ in range(20):
        assert client.get("/health").json == {"status": "ok"}
    assert store.pings == 1


# --- 13: made-up invoke keys count as refused keys -----------------------------------------------------------------


def test_made_up_invoke_keys_count_against_their_address(db: firestore.Client) -> None:
    from shared.config import IntakeSettings, get_settings

    limit = get_settings(IntakeSettings).refused_keys_per_address_per_minute
    address = {"X-Forwarded-For": f"192.0.2.{uuid.uuid4().int % 250}"}
    client = _api(db)
    dep = uuid.uuid4().hex

    def made_up(i: int) -> str:
        return f"vdk_{uuid.uuid4().hex[:16]}_{'A' * 43}" if i % 2 else f"vdk_made_up_{i}"

    answers = [
        client.get(f"/v1/deployments/{dep}", headers={**auth(made_up(i)), **address}).status_code
        for i in range(limit + 2)
    ]

    assert answers == [401] * limit + [429, 429]
    # Another address is not affected.
    other = {"X-Forwarded-For": f"198.51.100.{uuid.uuid4().int % 250}"}
    assert client.get(f"/v1/deployments/{dep}", headers={**auth(made_up(1)), **other}).status_code == 401


# --- 11: a sensitive step re-verifies an old verdict -----------------------------------------------------------------


def test_a_key_revoked_at_runpod_stops_creating_within_the_reverify_window(db: firestore.Client) -> None:
    # A key Runpod no longer knows (its owner revoked it), accepted 10 minutes ago for an hour.
    revoked = f"rp_revoked_{uuid.uuid4().hex}"
    store = DeploymentStore(db)
    checked = utcnow() - timedelta(minutes=10)
    store.record_key_verdict(
        _tenant(revoked), KeyVerdict(valid=True, expires_at=checked + timedelta(hours=1), checked_at=checked)
    )
    address = {"X-Forwarded-For": f"203.0.113.{uuid.uuid4().int % 250}"}
    client = _api(db)

    assert client.get("/v1/deployments", headers={**auth(revoked), **address}).status_code == 200  # reads: the hour
    created = client.post("/v1/deployments", json={"hf_model_id": "org/m"}, headers={**auth(revoked), **address})
    assert (created.status_code, created.json["error"]["code"]) == (401, "invalid_api_key")
    token = client.post("/v1/client-token", headers={**auth(revoked), **address})
    assert token.status_code == 401
    assert _owned(db, revoked) == 0


def test_a_recent_verdict_is_not_asked_again(db: firestore.Client) -> None:
    from tests.support.jobs import sim_requests

    api_key = key()
    client = _api(db)
    assert client.get("/v1/deployments", headers=auth(api_key)).status_code == 200
    assert client.post("/v1/deployments", json={"hf_model_id": "org/m"}, headers=auth(api_key)).status_code == 202
    assert sim_requests(api_key) == 1  # the first check only: the verdict is minutes old at most


class _FailingPublisher:
    def publish(self, topic: str, message: Any, **attributes: str) -> str:
        from shared.errors import RetryableError

        raise RetryableError(f"publish to {topic} failed")


def test_a_create_undone_after_a_failed_publish_gives_its_slot_back(db: firestore.Client) -> None:
    api_key = key()
    body = {"hf_model_id": "org/m", "workers_min": 1}
    failing = _api(db, publisher=_FailingPublisher())
    assert failing.post("/v1/deployments", json=body, headers=auth(api_key)).status_code == 503
    assert _owned(db, api_key) == 0
    assert _counts(db, api_key) == {"live": 0, "workers_min": 0}

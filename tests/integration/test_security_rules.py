"""firestore.rules enforced by the emulator for client requests (unsigned client JWTs), tenant by tenant.

The server client library bypasses rules; a browser or mobile client listening to its deployment does not.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid

import pytest
import requests
from google.cloud import firestore

from shared.server_records import KEY_VERDICTS, RATE_LIMITS, REQUEST_COUNTERS, SEEN_REPORTS
from shared.store import DEPLOYMENTS, IDEMPOTENCY, SECRETS
from shared.webhooks.records import WEBHOOK_DELIVERIES
from shared.webhooks.secrets import WEBHOOK_SECRETS

SERVER_ONLY = (
    SECRETS,
    IDEMPOTENCY,
    RATE_LIMITS,
    REQUEST_COUNTERS,
    WEBHOOK_SECRETS,
    WEBHOOK_DELIVERIES,
    KEY_VERDICTS,
    SEEN_REPORTS,
)


def client_token(project: str, tenant: str) -> str:
    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    now = int(time.time())
    claims = {
        "iss": f"https://securetoken.google.com/{project}",
        "aud": project,
        "sub": f"user-{tenant}",
        "user_id": f"user-{tenant}",
        "iat": now,
        "exp": now + 3600,
        "auth_time": now,
        "tenant": tenant,
        "firebase": {"sign_in_provider": "custom", "identities": {}},
    }
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.fixture
def read_as(firestore_emulator: str):  # type: ignore[no-untyped-def]
    project = os.environ["GOOGLE_CLOUD_PROJECT"]

    def read(path: str, tenant: str | None) -> int:
        headers = {"Authorization": f"Bearer {client_token(project, tenant)}"} if tenant else {}
        url = f"http://{firestore_emulator}/v1/projects/{project}/databases/(default)/documents/{path}"
        return requests.get(url, headers=headers, timeout=10).status_code

    return read


def test_owner_reads_own_deployment_and_log_only(read_as, firestore_emulator: str) -> None:  # type: ignore[no-untyped-def]
    db = firestore.Client(project=os.environ["GOOGLE_CLOUD_PROJECT"])
    dep = uuid.uuid4().hex
    owner, other = f"t_{uuid.uuid4().hex}", f"t_{uuid.uuid4().hex}"
    ref = db.collection(DEPLOYMENTS).document(dep)
    ref.set({"deployment_id": dep, "owner": owner, "status": "validating"})
    ref.collection("events").document("0000000001").set({"message": "hello"})
    for collection in (SECRETS, IDEMPOTENCY, RATE_LIMITS):
        db.collection(collection).document(dep).set({"owner": owner})

    assert read_as(f"{DEPLOYMENTS}/{dep}", owner) == 200
    assert read_as(f"{DEPLOYMENTS}/{dep}/events/0000000001", owner) == 200
    assert read_as(f"{DEPLOYMENTS}/{dep}", other) == 403
    assert read_as(f"{DEPLOYMENTS}/{dep}/events/0000000001", other) == 403
    assert read_as(f"{DEPLOYMENTS}/{dep}", None) == 403
    for collection in (SECRETS, IDEMPOTENCY, RATE_LIMITS):
        assert read_as(f"{collection}/{dep}", owner) == 403


@pytest.fixture
def write_as(firestore_emulator: str):  # type: ignore[no-untyped-def]
    project = os.environ["GOOGLE_CLOUD_PROJECT"]

    def write(path: str, tenant: str, method: str = "PATCH") -> int:
        headers = {"Authorization": f"Bearer {client_token(project, tenant)}"}
        url = f"http://{firestore_emulator}/v1/projects/{project}/databases/(default)/documents/{path}"
        body = {"fields": {"owner": {"stringValue": tenant}, "status": {"stringValue": "ready"}}}
        if method == "DELETE":
            return requests.delete(url, headers=headers, timeout=10).status_code
        return requests.patch(url, json=body, headers=headers, timeout=10).status_code

    return write


def test_clients_write_nothing_and_read_no_server_only_collection(read_as, write_as) -> None:  # type: ignore[no-untyped-def]
    db = firestore.Client(project=os.environ["GOOGLE_CLOUD_PROJECT"])
    dep, owner = uuid.uuid4().hex, f"t_{uuid.uuid4().hex}"
    ref = db.collection(DEPLOYMENTS).document(dep)
    ref.set({"deployment_id": dep, "owner": owner, "status": "validating"})
    ref.collection("events").document("0000000001").set({"message": "hello"})
    for collection in SERVER_ONLY:
        db.collection(collection).document(owner).set({"owner": owner, "deployment_id": dep})

    # Even the owner may not change its deployment, its log, or create one.
    assert write_as(f"{DEPLOYMENTS}/{dep}", owner) == 403
    assert write_as(f"{DEPLOYMENTS}/{dep}", owner, "DELETE") == 403
    assert write_as(f"{DEPLOYMENTS}/{uuid.uuid4().hex}", owner) == 403
    assert write_as(f"{DEPLOYMENTS}/{dep}/events/0000000002", owner) == 403
    for collection in SERVER_ONLY:
        assert read_as(f"{collection}/{owner}", owner) == 403, collection
        assert write_as(f"{collection}/{owner}", owner) == 403, collection
    assert ref.get().to_dict()["status"] == "validating"

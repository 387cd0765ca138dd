"""firestore.rules for issue 11's collections: an owner's client reads its job records; invoke keys and daily usage
documents are server-only."""

from __future__ import annotations

import os
import uuid

import requests
from google.cloud import firestore

from shared.jobs.records import JOBS, USAGE_DAYS
from shared.store import DEPLOYMENTS, INVOKE_KEYS
from tests.integration.test_security_rules import client_token


def test_job_records_are_the_owners_and_keys_and_usage_days_are_server_only(firestore_emulator: str) -> None:
    project = os.environ["GOOGLE_CLOUD_PROJECT"]
    db = firestore.Client(project=project)
    dep = uuid.uuid4().hex
    owner, other = f"t_{uuid.uuid4().hex}", f"t_{uuid.uuid4().hex}"
    ref = db.collection(DEPLOYMENTS).document(dep)
    ref.set({"deployment_id": dep, "owner": owner, "status": "ready"})
    ref.collection(JOBS).document("job-1").set({"job_id": "job-1", "owner": owner, "status": "COMPLETED"})
    db.collection(INVOKE_KEYS).document(dep[:16]).set({"owner": owner, "deployment_id": dep, "hash": "h"})
    db.collection(USAGE_DAYS).document(f"{dep}_2026-12-01").set({"owner": owner, "requests": 1})

    def read(path: str, tenant: str | None) -> int:
        headers = {"Authorization": f"Bearer {client_token(project, tenant)}"} if tenant else {}
        url = f"http://{firestore_emulator}/v1/projects/{project}/databases/(default)/documents/{path}"
        return requests.get(url, headers=headers, timeout=10).status_code

    assert read(f"{DEPLOYMENTS}/{dep}/{JOBS}/job-1", owner) == 200
    assert read(f"{DEPLOYMENTS}/{dep}/{JOBS}/job-1", other) == 403
    assert read(f"{DEPLOYMENTS}/{dep}/{JOBS}/job-1", None) == 403
    assert read(f"{INVOKE_KEYS}/{dep[:16]}", owner) == 403
    assert read(f"{USAGE_DAYS}/{dep}_2026-12-01", owner) == 403

"""Helpers of the inference tests: ready deployments on instant-worker endpoints of the Runpod simulator, written
directly (no provisioning runs), and what the simulator and the API say of them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests
from google.cloud import firestore

from shared.creation import NewDeployment
from shared.crypto import Sealer, tenant_id
from shared.document import Deployment
from shared.lifecycle import Status
from shared.models import SealedCredentials
from shared.runpod.client import EndpointSpec, GpuSelection, QueueDelayScaling, RunpodConnector, WorkerLimits
from shared.store import DeploymentStore, utcnow


def register_runpod_key(runpod_url: str, api_key: str) -> str:
    """Make the key an account of the simulator (the API verifies every new key with Runpod)."""
    requests.post(f"{runpod_url}/_sim/accounts", json={"api_key": api_key}, timeout=5).raise_for_status()
    return api_key


PROMPT: dict[str, Any] = {"prompt": "a red fox in the snow", "num_inference_steps": 2, "width": 64, "height": 64}


def key() -> str:
    return register_runpod_key(os.environ["RUNPOD_API_BASE_URL"], f"rp_test_{uuid.uuid4().hex}")


def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def sim_requests(api_key: str) -> int:
    state = requests.get(f"{os.environ['RUNPOD_API_BASE_URL']}/_sim/state", timeout=5).json()
    return int(next(a["requests"] for a in state["accounts"] if a["api_key"] == api_key))


def make_endpoint(api_key: str, workers_max: int = 3) -> str:
    url = os.environ["RUNPOD_API_BASE_URL"]
    spec = EndpointSpec(
        name=f"visgate-{uuid.uuid4().hex[:12]}",
        image="ghcr.io/visgate/diffusers-worker@sha256:" + "0" * 64,
        env={"HF_MODEL_ID": "org/model"},
        disk=5,
        gpu=GpuSelection(pools=["AMPERE_16"]),
        workers=WorkerLimits(min=0, max=workers_max, idleTimeout=5),
        scaling=QueueDelayScaling(queueDelay=4),
        flashboot="OFF",
        timeout=600_000,
    )
    return RunpodConnector(url, url, 10).client(api_key).create_endpoint(spec).id


def write_ready(db: firestore.Client, api_key: str, workers_max: int = 3, **fields: Any) -> str:
    """A ready deployment on an instant-worker endpoint, written directly: no ``deployment-requested`` is
    published, so provisioning (running beside these tests when the whole stack is up) never touches it."""
    deployment_id = uuid.uuid4().hex
    now = utcnow()
    credentials = SealedCredentials(runpod_api_key=api_key, **fields.pop("credentials", {}))
    doc = Deployment(
        deployment_id=deployment_id,
        owner=tenant_id(os.environ["TENANT_PEPPER"], api_key),
        status=Status.READY,
        hf_model_id="org/model",
        created_at=now,
        updated_at=now,
        phase_timestamps={Status.VALIDATING: now, Status.READY: now},
        **fields,
    )
    doc.runpod.endpoint_id = make_endpoint(api_key, workers_max)
    doc.gpu.pool_in_use = "AMPERE_16"
    doc.gpu.window = ["AMPERE_16"]
    DeploymentStore(db).create(
        NewDeployment(
            document=doc,
            sealed_credentials=Sealer(os.environ["SEALING_KEY"]).seal(deployment_id, credentials),
            callback_nonce="n",
            callback_secret_hash="h",
        )
    )
    return deployment_id


@pytest.fixture
def ready(intake_client: Any, db: firestore.Client) -> Callable[..., tuple[str, str]]:
    """A factory: (Runpod key, deployment id) of a ready deployment on an instant-worker endpoint, its key already
    verified by the API (so a test's Runpod request count starts after that check)."""

    def make(workers_max: int = 3) -> tuple[str, str]:
        api_key = key()
        deployment_id = write_ready(db, api_key, workers_max)
        assert intake_client.get(f"/v1/deployments/{deployment_id}", headers=auth(api_key)).status_code == 200
        return api_key, deployment_id

    return make


def usage_of(intake_client: Any, api_key: str, deployment_id: str) -> dict[str, Any]:
    resp = intake_client.get(f"/v1/deployments/{deployment_id}", headers=auth(api_key))
    assert resp.status_code == 200, resp.json
    return dict(resp.json["usage"])

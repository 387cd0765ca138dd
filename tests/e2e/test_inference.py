"""Issue 11 end to end: jobs through the API on the whole local stack with the real worker (tiny model, CPU)."""

from __future__ import annotations

import base64
import io
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from PIL import Image

from local.stack import DEMO_MODEL
from shared.config import Settings
from tests.integration.conftest import register_runpod_key
from tests.support.stack import RunningStack
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

JOB = {"prompt": "a red fox", "seed": 5, "num_inference_steps": 2, "width": 64, "height": 64}


def fresh_key(stack: RunningStack) -> str:
    """A Runpod account of its own: its own tenant, so its own rate window (polling counts against it)."""
    return register_runpod_key(stack.env["RUNPOD_API_BASE_URL"], f"rp_e2e_{uuid.uuid4().hex}")


def _settled(api: str, headers: dict[str, str], deployment_id: str, timeout_s: float = 600.0) -> dict[str, Any]:
    """The deployment's view once it is ready or failed (polled once a second: well inside the rate limit)."""
    seen: list[dict[str, Any]] = [{}]

    def settled() -> dict[str, Any] | None:
        seen[0] = requests.get(f"{api}/v1/deployments/{deployment_id}", headers=headers, timeout=10).json()
        return seen[0] if seen[0].get("status") in ("ready", "failed") else None

    view: dict[str, Any] = eventually(settled, timeout_s, interval_s=1.0, what=lambda: f"not settled: {seen[0]}")
    return view


def test_jobs_invoke_keys_and_usage_through_the_api_with_the_real_worker(local_stack: RunningStack) -> None:
    api = local_stack.env["PUBLIC_API_BASE_URL"]
    owner = {"Authorization": f"Bearer {fresh_key(local_stack)}"}
    created = requests.post(f"{api}/v1/deployments", json={"hf_model_id": DEMO_MODEL}, headers=owner, timeout=30)
    assert created.status_code == 202, created.text
    deployment_id = created.json()["deployment_id"]
    base = f"{api}/v1/deployments/{deployment_id}"
    try:
        view = _settled(api, owner, deployment_id)
        assert view["status"] == "ready", view.get("error")
        key = requests.post(f"{base}/keys", headers=owner, timeout=10).json()["key"]
        app = {"Authorization": f"Bearer {key}"}  # what an app holds: no Runpod key

        sync = requests.post(f"{base}/runsync?wait=120000", json={"input": JOB}, headers=app, timeout=180)
        assert sync.status_code == 200, sync.text
        result = sync.json()
        assert result["status"] == "COMPLETED"
        image = result["output"]["images"][0]
        assert image["seed"] == 5
        with Image.open(io.BytesIO(base64.b64decode(image["image"]))) as decoded:
            assert decoded.size == (64, 64)
        assert result["metrics"]["execution_ms"] > 0

        queued = requests.post(f"{base}/run", json={"input": {**JOB, "seed": 6}}, headers=app, timeout=30)
        assert queued.status_code == 202, queued.text
        status_url = queued.json()["status_url"]
        job: dict[str, Any] = eventually(
            lambda: (
                (j := requests.get(status_url, headers=app, timeout=30).json())["status"] in ("COMPLETED", "FAILED")
                and j
            ),
            120,
            interval_s=0.5,
        )
        assert job["status"] == "COMPLETED", job
        assert job["images"] == 1 and job["output"]["images"][0]["seed"] == 6

        refused = requests.post(f"{base}/runsync", json={"input": {**JOB, "width": 63}}, headers=app, timeout=30)
        assert refused.status_code == 400
        assert refused.json()["error"]["details"][0]["field"] == "input.width"

        usage = requests.get(base, headers=app, timeout=10).json()["usage"]
        assert (usage["requests"], usage["completed"], usage["images"]) == (2, 2, 2)
        assert usage["execution_ms"] > 0 and usage["estimated_cost_usd"] > 0
        assert requests.get(f"{api}/v1/deployments", headers=app, timeout=10).status_code == 401
    finally:
        requests.delete(base, headers=owner, timeout=10)


def test_images_go_to_the_output_bucket_and_come_back_as_presigned_urls(local_stack: RunningStack) -> None:
    from local import bootstrap

    s3_url = local_stack.env["AWS_ENDPOINT_URL_S3"]
    bootstrap.create_bucket(s3_url, "visgate-e2e-outputs")
    api = local_stack.env["PUBLIC_API_BASE_URL"]
    owner = {"Authorization": f"Bearer {fresh_key(local_stack)}"}
    body = {
        "hf_model_id": DEMO_MODEL,
        "output_s3_url": "s3://visgate-e2e-outputs/images",
        "user_aws_access_key_id": bootstrap.S3_ACCESS_KEY_ID,
        "user_aws_secret_access_key": bootstrap.S3_SECRET_ACCESS_KEY,
        "user_aws_endpoint_url": s3_url,
        "user_aws_region": bootstrap.S3_REGION,
    }
    created = requests.post(f"{api}/v1/deployments", json=body, headers=owner, timeout=30)
    assert created.status_code == 202, created.text
    deployment_id = created.json()["deployment_id"]
    base = f"{api}/v1/deployments/{deployment_id}"
    try:
        view = _settled(api, owner, deployment_id)
        assert view["status"] == "ready", view.get("error")
        sync = requests.post(f"{base}/runsync?wait=120000", json={"input": JOB}, headers=owner, timeout=180)
        assert sync.status_code == 200, sync.text
        image = sync.json()["output"]["images"][0]
        assert "image" not in image
        url = image["url"]
        assert url.startswith(s3_url) and "X-Amz-Signature=" in url  # presigned, never a bare bucket URL
        # s3Config names only the bucket: the worker has the URL's prefix and the URL lifetime from its env.
        parts = urlsplit(url)
        assert parts.path.startswith(f"/visgate-e2e-outputs/images/{sync.json()['job_id']}/"), parts.path
        assert parse_qs(parts.query)["X-Amz-Expires"] == [str(Settings().output_url_expiry_s)]
        fetched = requests.get(url, timeout=30)
        assert fetched.status_code == 200
        with Image.open(io.BytesIO(fetched.content)) as decoded:
            assert decoded.size == (64, 64)
        job = requests.get(sync.json()["status_url"], headers=owner, timeout=30).json()
        assert job["output_refs"] == [url] and job["images"] == 1
    finally:
        requests.delete(base, headers=owner, timeout=10)

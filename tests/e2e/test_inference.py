"""Issue 11 end to end: jobs through the API on the whole local stack with the real worker (tiny model, CPU)."""

from __future__ import annotations

import base64
import io
import time
from typing import Any

import pytest
import requests
from PIL import Image

from local.stack import DEMO_API_KEY, DEMO_MODEL
from tests.e2e.test_end_to_end import _settled
from tests.support.stack import RunningStack

pytestmark = pytest.mark.e2e

JOB = {"prompt": "a red fox", "seed": 5, "num_inference_steps": 2, "width": 64, "height": 64}


def test_jobs_invoke_keys_and_usage_through_the_api_with_the_real_worker(local_stack: RunningStack) -> None:
    api = local_stack.env["PUBLIC_API_BASE_URL"]
    owner = {"Authorization": f"Bearer {DEMO_API_KEY}"}
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
        job: dict[str, Any] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = requests.get(queued.json()["status_url"], headers=app, timeout=30).json()
            if job["status"] in ("COMPLETED", "FAILED"):
                break
            time.sleep(0.2)
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

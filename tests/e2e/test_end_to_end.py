"""The whole local stack with the real worker process on a tiny model (CPU): what `make run` does (`visgate e2e`)."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image
from visgate_client import Client

from local.processes import REPO_ROOT
from local.stack import DEMO_API_KEY, DEMO_LORA, DEMO_MODEL
from tests.support.stack import RunningStack

pytestmark = pytest.mark.e2e


def sim_state(stack: RunningStack) -> dict:  # type: ignore[type-arg]
    return dict(requests.get(f"{stack.env['RUNPOD_API_BASE_URL']}/_sim/state", timeout=10).json())


def test_visgate_e2e_deploys_generates_and_tears_down(local_stack: RunningStack, tmp_path: Path) -> None:
    image_path = tmp_path / "out.png"
    command = [sys.executable, "-m", "visgate_client", "e2e", DEMO_MODEL, "--json", "-o", str(image_path)]
    command += ["--steps", "4", "--seed", "7", "--width", "64", "--height", "64"]
    env = {**os.environ, "VISGATE_API_URL": local_stack.intake_url, "RUNPOD_API_KEY": DEMO_API_KEY}
    done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    report = json.loads(done.stdout)

    assert report["ok"] is True and report["model"] == DEMO_MODEL
    ready = report["ready"]
    assert ready["total_s"] > 0 and ready["wall_s"] >= ready["total_s"] * 0.5
    assert {"validating", "creating_endpoint", "loading_model"} <= set(ready["phases"])
    assert sum(ready["phases"].values()) == pytest.approx(ready["total_s"], abs=0.01)
    worker = ready["worker"]
    assert worker["download_s"] >= 0 and worker["load_s"] > 0 and worker["warmup_s"] > 0
    inference = report["inference"]
    assert inference["seed"] == 7 and inference["wall_s"] > 0 and inference["inference_s"] > 0
    assert inference["delay_s"] >= 0 and inference["execution_s"] > 0
    assert report["teardown_s"] > 0 and report["image"] == str(image_path)
    with Image.open(image_path) as image:
        assert image.format == "PNG" and image.size == (64, 64)

    deployment = Client(local_stack.intake_url, DEMO_API_KEY).get(report["deployment_id"])
    assert deployment.status == "deleted"
    view = deployment.view
    assert view["model_commit_sha"] and len(view["model_commit_sha"]) == 40
    assert view["gpu_candidates"] and view["vram_estimate_gb"] > 0
    assert view["gpu_pool"] == report["gpu_pool"] and view["gpu_pool"] in view["gpu_candidates"]
    name = f"visgate-{report['deployment_id']}"
    account = next(a for a in sim_state(local_stack)["accounts"] if a["api_key"] == DEMO_API_KEY)
    assert not [e for e in account["endpoints"] if e["name"].startswith(name)]
    assert not [t for t in account["templates"] if t["name"] == name]
    assert not [w for w in account["workers"] if w["endpointId"] == report["endpoint_id"]]


def test_image_to_image_with_a_lora_through_the_whole_stack(local_stack: RunningStack) -> None:
    """Issue 13 end to end: the task and a LoRA adapter go from the create request to the real worker's job."""
    api = local_stack.env["PUBLIC_API_BASE_URL"]
    headers = {"Authorization": f"Bearer {DEMO_API_KEY}"}
    body = {"hf_model_id": DEMO_MODEL, "task": "image_to_image", "loras": [{"hf_model_id": DEMO_LORA}]}
    created = requests.post(f"{api}/v1/deployments", json=body, headers=headers, timeout=30)
    assert created.status_code == 202, created.text
    deployment_id = created.json()["deployment_id"]
    try:
        view = _settled(api, headers, deployment_id)
        assert view["status"] == "ready", view.get("error")
        assert view["task"] == "image_to_image"
        assert view["loras"][0]["hf_model_id"] == DEMO_LORA
        # The worker's ready report names what it fused and how it set up the pipeline.
        assert [lora["hf_model_id"] for lora in view["timings"]["loras"]] == [DEMO_LORA]
        assert view["timings"]["settings"]["task"] == "image_to_image"
        assert view["timings"]["lora_s"] > 0
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (200, 80, 40)).save(buffer, format="PNG")
        job = {
            "prompt": "a fox",
            "seed": 3,
            "num_inference_steps": 2,
            "strength": 0.9,
            "image": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(),
        }
        answer = requests.post(
            f"{view['endpoint_url']}/runsync?wait=120000",
            json={"input": job},
            headers=headers,
            timeout=180,
        ).json()
        assert answer["status"] == "COMPLETED", answer
        assert answer["output"]["parameters"]["strength"] == 0.9
        missing = requests.post(
            f"{view['endpoint_url']}/runsync?wait=120000",
            json={"input": {"prompt": "a fox"}},
            headers=headers,
            timeout=180,
        ).json()
        assert missing["status"] == "FAILED"
        assert "image: required by an image_to_image deployment" in str(missing.get("error"))
    finally:
        requests.delete(f"{api}/v1/deployments/{deployment_id}", headers=headers, timeout=10)


def _settled(api: str, headers: dict[str, str], deployment_id: str, timeout_s: float = 600.0) -> dict[str, Any]:
    """The deployment's view once it is ready or failed (polling gently: the demo tenant's rate limit is shared by
    the whole session)."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = requests.get(f"{api}/v1/deployments/{deployment_id}", headers=headers, timeout=10)
        view: dict[str, Any] = answer.json()
        if (answer.status_code == 200 and view["status"] in ("ready", "failed")) or time.monotonic() > deadline:
            return view
        time.sleep(float(answer.headers.get("Retry-After", "0.5")))

"""The whole local stack with the real worker process on a tiny model (CPU): what `make run` does, plus teardown."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from local import demo
from tests.support.stack import RunningStack

pytestmark = pytest.mark.e2e


def sim_state(stack: RunningStack) -> dict:  # type: ignore[type-arg]
    return dict(requests.get(f"{stack.env['RUNPOD_API_BASE_URL']}/_sim/state", timeout=10).json())


def test_deploy_generate_delete(local_stack: RunningStack, tmp_path: Path) -> None:
    image_path = tmp_path / "out.png"
    seen = demo.run(local_stack.env, output=image_path)

    deployment = seen["deployment"]
    assert deployment["status"] == "ready"
    assert deployment["model_commit_sha"] and len(deployment["model_commit_sha"]) == 40
    assert deployment["gpu_candidates"] and deployment["vram_estimate_gb"] > 0
    assert deployment["gpu_pool"] in deployment["gpu_candidates"]  # the pool the worker landed in, as it reported
    timings = deployment["timings"]
    assert timings["download_s"] >= 0 and timings["load_s"] > 0 and timings["warmup_s"] > 0
    assert set(deployment["phase_timestamps"]) >= {"validating", "creating_endpoint", "loading_model", "ready"}
    with Image.open(image_path) as image:
        assert image.format == "PNG" and image.size == (64, 64)
    assert seen["output"]["images"][0]["seed"] == demo.PROMPT["seed"]

    api = local_stack.env["PUBLIC_API_BASE_URL"]
    headers = {"Authorization": f"Bearer {demo.DEMO_API_KEY}"}
    deployment_id = deployment["deployment_id"]
    assert requests.delete(f"{api}/v1/deployments/{deployment_id}", headers=headers, timeout=10).status_code == 202
    deadline = time.monotonic() + 60
    status = None
    while time.monotonic() < deadline:
        status = requests.get(f"{api}/v1/deployments/{deployment_id}", headers=headers, timeout=10).json()["status"]
        if status == "deleted":
            break
        time.sleep(0.5)
    assert status == "deleted"
    name = f"visgate-{deployment_id}"
    account = next(a for a in sim_state(local_stack)["accounts"] if a["api_key"] == demo.DEMO_API_KEY)
    assert not [e for e in account["endpoints"] if e["name"].startswith(name)]
    assert not [t for t in account["templates"] if t["name"] == name]
    endpoint_id = deployment["endpoint_id"]
    assert not [w for w in account["workers"] if w["endpointId"] == endpoint_id]


def test_image_to_image_with_a_lora_through_the_whole_stack(local_stack: RunningStack) -> None:
    """Issue 13 end to end: the task and a LoRA adapter go from the create request to the real worker's job."""
    api = local_stack.env["PUBLIC_API_BASE_URL"]
    headers = {"Authorization": f"Bearer {demo.DEMO_API_KEY}"}
    body = {"hf_model_id": demo.DEMO_MODEL, "task": "image_to_image", "loras": [{"hf_model_id": demo.DEMO_LORA}]}
    created = requests.post(f"{api}/v1/deployments", json=body, headers=headers, timeout=30)
    assert created.status_code == 202, created.text
    deployment_id = created.json()["deployment_id"]
    try:
        view = demo.wait_until_settled(api, headers, deployment_id, demo.READY_TIMEOUT_S)
        assert view["status"] == "ready", view.get("error")
        assert view["task"] == "image_to_image"
        assert view["loras"][0]["hf_model_id"] == demo.DEMO_LORA
        # The worker's ready report names what it fused and how it set up the pipeline.
        assert [lora["hf_model_id"] for lora in view["timings"]["loras"]] == [demo.DEMO_LORA]
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

"""The main job of ``make run``: deploy the demo model through the local stack the way a user would.

POST a deployment → follow its Server-Sent Events until ``ready`` (or ``failed``) → ``runsync`` one prompt on the
Runpod endpoint it created → write the image to ``out/demo.png``. Every step goes through the same HTTP APIs a user
calls in production (intake, then Runpod's data plane), here served by the emulators and simulators.
"""

from __future__ import annotations

import base64
import json
import logging
import shlex
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import requests

logger = logging.getLogger(__name__)

DEMO_API_KEY = "rp_local_demo_key"  # the Runpod simulator registers it at start
DEMO_MODEL = "visgate-tiny/sd-tiny"
# A tiny LoRA adapter for DEMO_MODEL: `"loras": [{"hf_model_id": DEMO_LORA}]` on a create request.
DEMO_LORA = "visgate-tiny/sd-tiny-lora"
READY_TIMEOUT_S = 600.0
OUTPUT = Path("out/demo.png")
PROMPT: dict[str, Any] = {
    "prompt": "a watercolor fox in a misty forest",
    "seed": 7,
    "num_inference_steps": 4,
    "width": 64,
    "height": 64,
}


class DemoError(RuntimeError):
    """A step of the demo did not give what a user would expect."""


def sse_events(response: requests.Response) -> Iterator[tuple[str, str]]:
    """``(event, data)`` pairs from a Server-Sent Events response."""
    event, data = "message", list[str]()
    for raw in response.iter_lines():
        line = raw.decode()
        if line == "":
            if data:
                yield event, "\n".join(data)
            event, data = "message", list[str]()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def wait_until_settled(api: str, headers: Mapping[str, str], deployment_id: str, timeout_s: float) -> dict[str, Any]:
    """Follow the deployment's stream (reconnecting as a browser would) until it is ready or has failed."""
    deadline = time.monotonic() + timeout_s
    last_status = None
    while time.monotonic() < deadline:
        url = f"{api}/v1/deployments/{deployment_id}/stream"
        with requests.get(url, headers=headers, stream=True, timeout=(10, 60)) as stream:
            stream.raise_for_status()
            for event, data in sse_events(stream):
                if event != "deployment":
                    continue
                view = json.loads(data)
                if view["status"] != last_status:
                    last_status = view["status"]
                    logger.info("deployment %s is %s", deployment_id, last_status)
                if view["status"] in ("ready", "failed", "deleted"):
                    return dict(view)
    raise DemoError(f"deployment {deployment_id} did not settle within {timeout_s:.0f} s (last: {last_status})")


def generate(endpoint_url: str, api_key: str, output: Path) -> dict[str, Any]:
    """One synchronous job on the endpoint, as a user calls Runpod; the image is written to ``output``."""
    resp = requests.post(
        f"{endpoint_url}/runsync?wait=120000",
        json={"input": PROMPT},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=180,
    )
    resp.raise_for_status()
    job = resp.json()
    if job.get("status") != "COMPLETED":
        raise DemoError(f"runsync ended {job.get('status')}: {job.get('error')}")
    image = job["output"]["images"][0]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(base64.b64decode(image["image"]))
    return dict(job["output"])


def run(env: Mapping[str, str], output: Path = OUTPUT) -> dict[str, Any]:
    """The whole demo; returns what it saw (the ready deployment and the job output without the image)."""
    api = env["PUBLIC_API_BASE_URL"]
    headers = {"Authorization": f"Bearer {DEMO_API_KEY}"}
    created = requests.post(f"{api}/v1/deployments", json={"hf_model_id": DEMO_MODEL}, headers=headers, timeout=30)
    if created.status_code != 202:
        raise DemoError(f"POST /v1/deployments answered {created.status_code}: {created.text[:500]}")
    deployment_id = created.json()["deployment_id"]
    logger.info("accepted deployment %s of %s", deployment_id, DEMO_MODEL)
    view = wait_until_settled(api, headers, deployment_id, READY_TIMEOUT_S)
    if view["status"] != "ready":
        raise DemoError(f"deployment {deployment_id} ended {view['status']}: {view.get('error')}")
    logger.info("ready on %s: timings %s", view["endpoint_url"], view.get("timings"))
    result = generate(view["endpoint_url"], DEMO_API_KEY, output)
    logger.info(
        "wrote %s (seed %s, %.2f s inference)", output, result["images"][0]["seed"], result["timings"]["inference_s"]
    )
    result["images"] = [{k: v for k, v in img.items() if k != "image"} for img in result["images"]]
    return {"deployment": view, "output": result}


def main(env: Mapping[str, str]) -> int:
    """Run the demo against the stack whose environment is ``env``; the process exit status."""
    api = env["PUBLIC_API_BASE_URL"]
    try:
        run(env)
    except (DemoError, requests.RequestException) as exc:
        logger.error("demo failed: %s (logs: .local/logs/)", exc)
        return 1
    curl = shlex.join(["curl", "-sS", f"{api}/v1/deployments", "-H", f"Authorization: Bearer {DEMO_API_KEY}"])
    logger.info("the API is at %s; list your deployments with:\n  %s", api, curl)
    return 0

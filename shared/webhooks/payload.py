"""What a deployment asked to be told, and the JSON body of one delivery.

The body is ``{"type": "deployment.<status>", "timestamp": <ISO-8601 of the transition>, "data": {...}}``: data is
the public view of the deployment as the event carried it, plus, on ``ready``, a ``usage_example`` (how to call the
endpoint, with a placeholder where the Runpod key goes). Never a secret.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shared.deployments.events import ReceivedEvent
from shared.lifecycle import Status
from shared.store import DeploymentStore

DEFAULT_EVENTS = (Status.READY, Status.FAILED, Status.DELETED)
KEY_PLACEHOLDER = "<YOUR_RUNPOD_API_KEY>"


@dataclass(frozen=True)
class WebhookTarget:
    """Where and what a deployment's owner wants to be told."""

    deployment_id: str
    owner: str
    url: str
    events: frozenset[str]
    pipeline_class: str | None = None


def webhook_target(store: DeploymentStore, deployment_id: str) -> WebhookTarget | None:
    """The deployment's webhook settings; None when it has no webhook URL (or no longer exists).

    The one place the webhooks read the stored document.
    """
    doc = store.get(deployment_id)
    if doc is None or not doc.user_webhook_url:
        return None
    wanted = doc.webhook_events or list(DEFAULT_EVENTS)
    return WebhookTarget(
        deployment_id=deployment_id,
        owner=doc.owner,
        url=doc.user_webhook_url,
        events=frozenset(status.value for status in wanted),
        pipeline_class=doc.pipeline_class,
    )


def body(event: ReceivedEvent, target: WebhookTarget) -> bytes:
    """The delivery body of ``event`` (built once per delivery; every attempt sends the same bytes)."""
    data = dict(event.data)
    if event.status == Status.READY.value and data.get("endpoint_url"):
        data["usage_example"] = usage_example(
            str(data["endpoint_url"]), str(data.get("hf_model_id", "")), target.pipeline_class
        )
    payload = {
        "type": f"deployment.{event.status}",
        "timestamp": event.time.isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def usage_example(endpoint_url: str, hf_model_id: str, pipeline_class: str | None) -> dict[str, Any]:
    """A ready-to-adapt request to the endpoint: a synchronous text-to-image job suited to the model family."""
    return {
        "method": "POST",
        "url": f"{endpoint_url.rstrip('/')}/runsync",
        "headers": {"Authorization": f"Bearer {KEY_PLACEHOLDER}", "Content-Type": "application/json"},
        "body": {"input": family_input(hf_model_id, pipeline_class)},
    }


def family_input(hf_model_id: str, pipeline_class: str | None) -> dict[str, Any]:
    """Sensible job input per family: distilled (turbo, schnell) models want few steps and no guidance."""
    model = hf_model_id.lower()
    pipeline = pipeline_class or ""
    distilled = "turbo" in model or "schnell" in model or "lightning" in model
    if pipeline.startswith("Flux"):
        size, steps, guidance = 1024, (4 if distilled else 28), (0.0 if distilled else 3.5)
    elif pipeline.startswith(("StableDiffusion3", "Sana")):
        size, steps, guidance = 1024, 28, 4.5
    elif pipeline.startswith("StableDiffusionXL"):
        size, steps, guidance = (512, 1, 0.0) if distilled else (1024, 30, 7.0)
    else:  # Stable Diffusion 1.x/2.x and other UNet text-to-image pipelines
        size, steps, guidance = (512, 1, 0.0) if distilled else (512, 25, 7.5)
    return {
        "prompt": "a lighthouse on a cliff at sunset, detailed, 35mm photo",
        "num_inference_steps": steps,
        "guidance_scale": guidance,
        "width": size,
        "height": size,
        "seed": 42,
        "num_images": 1,
        "output_format": "png",
    }

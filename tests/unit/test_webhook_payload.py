"""The webhook body: type, timestamp, the public view, a usage example on ready; never a secret."""

from __future__ import annotations

import json

from scripts import event_examples
from shared.deployments.events import lifecycle_event, parse_message, pubsub_message
from shared.document import Deployment
from shared.lifecycle import Status
from shared.webhooks.payload import KEY_PLACEHOLDER, WebhookTarget, body, family_input


def received(status: Status):  # type: ignore[no-untyped-def]
    data, attributes = pubsub_message(
        lifecycle_event(Deployment.from_firestore(event_examples.example_document(status)))
    )
    return parse_message(attributes, data)


TARGET = WebhookTarget("d", "t_owner", "https://example.com/h", frozenset({"ready"}), "StableDiffusionPipeline")


def test_ready_body_has_a_usage_example_with_a_placeholder_key() -> None:
    sent = json.loads(body(received(Status.READY), TARGET))
    assert sent["type"] == "deployment.ready"
    assert sent["timestamp"] == "2026-12-01T12:00:25Z"
    example = sent["data"]["usage_example"]
    assert example["method"] == "POST"
    assert example["url"] == "https://api.runpod.ai/v2/abc123def456gh/runsync"
    assert example["headers"]["Authorization"] == f"Bearer {KEY_PLACEHOLDER}"
    assert example["body"]["input"]["num_inference_steps"] == 1  # sd-turbo is distilled
    assert "owner" not in sent["data"] and "t_owner" not in json.dumps(sent)


def test_other_bodies_have_no_usage_example() -> None:
    sent = json.loads(body(received(Status.FAILED), TARGET))
    assert sent["type"] == "deployment.failed"
    assert sent["data"]["error"]["code"] == "no_capacity"
    assert "usage_example" not in sent["data"]


def test_family_inputs() -> None:
    assert family_input("black-forest-labs/FLUX.1-schnell", "FluxPipeline")["num_inference_steps"] == 4
    assert family_input("black-forest-labs/FLUX.1-dev", "FluxPipeline")["guidance_scale"] == 3.5
    assert family_input("stabilityai/stable-diffusion-xl-base-1.0", "StableDiffusionXLPipeline")["width"] == 1024
    assert family_input("runwayml/stable-diffusion-v1-5", None)["width"] == 512

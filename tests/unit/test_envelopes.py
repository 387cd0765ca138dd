"""Envelopes: Pub/Sub CloudEvents and Cloud Tasks requests into domain messages."""

from __future__ import annotations

import base64
import json

import pytest
from cloudevents.http import CloudEvent

from shared.envelopes import MalformedDeliveryError, parse_pubsub, parse_task
from shared.messages import DeploymentRequested, ReadinessCheck


def _event(data: dict[str, object]) -> CloudEvent:
    attributes = {"type": "google.cloud.pubsub.topic.v1.messagePublished", "source": "//pubsub", "id": "m-1"}
    return CloudEvent(attributes, data)


def test_pubsub_message_is_decoded_with_its_publish_time() -> None:
    payload = {"deployment_id": "d1", "requested_at": "2026-11-01T12:00:00Z", "future_field": 1}
    message = {
        "data": base64.b64encode(json.dumps(payload).encode()).decode(),
        "messageId": "42",
        "publishTime": "2026-11-01T12:00:01.123456789Z",
        "attributes": {"deployment_id": "d1"},
    }

    delivery = parse_pubsub(_event({"message": message}), DeploymentRequested)

    assert delivery.message.deployment_id == "d1"
    assert delivery.message_id == "42"
    assert delivery.published_at is not None
    assert delivery.published_at.microsecond == 123456
    assert delivery.age_s() > 0


@pytest.mark.parametrize(
    "data",
    [{}, {"message": {"data": "not base64!"}}, {"message": {"data": base64.b64encode(b'{"x": 1}').decode()}}],
)
def test_malformed_pubsub_deliveries_are_recognised(data: dict[str, object]) -> None:
    with pytest.raises(MalformedDeliveryError):
        parse_pubsub(_event(data), DeploymentRequested)


def test_task_body_and_cloud_tasks_headers() -> None:
    headers = {"X-CloudTasks-TaskName": "readiness-d1-3", "X-CloudTasks-TaskRetryCount": "2"}

    delivery = parse_task(b'{"deployment_id": "d1", "check": 3}', headers, ReadinessCheck)

    assert (delivery.message.check, delivery.task_name, delivery.retry_count) == (3, "readiness-d1-3", 2)
    with pytest.raises(MalformedDeliveryError):
        parse_task(b"[]", headers, ReadinessCheck)

"""Lifecycle CloudEvents: attributes of the Pub/Sub binding, data = the public view, the documented schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from scripts import event_examples
from shared.deployments.events import (
    BUDGET_EXHAUSTED,
    BUDGET_WARNING,
    GPU_SWITCHED,
    NotALifecycleEventError,
    lifecycle_event,
    parse_message,
    pubsub_message,
)
from shared.document import Deployment
from shared.lifecycle import Status
from shared.models import DeploymentView

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events"
SCHEMA = json.loads((DOCS / "deployment-event.schema.json").read_text())


def validate(message: dict[str, object]) -> None:
    jsonschema.validate(message, SCHEMA, format_checker=jsonschema.FormatChecker())


@pytest.mark.parametrize("kind", event_examples.EVENT_KINDS)
def test_each_type_has_an_up_to_date_valid_example(kind: str) -> None:
    path = DOCS / "examples" / f"visgate.deployment.{kind}.json"
    assert path.read_text() == event_examples.render(kind), "run: python -m scripts.event_examples"
    example = json.loads(path.read_text())
    validate(example)
    assert example["attributes"]["ce-type"] == f"visgate.deployment.{kind}"
    if kind == GPU_SWITCHED:  # no status change: the view as it stands, and what the switch did
        assert example["data"]["status"] == Status.CREATING_ENDPOINT.value
        assert example["data"]["gpu_switch"] == {
            "from": ["AMPERE_16", "ADA_24"],
            "to": ["AMPERE_24", "ADA_32_PRO"],
            "throttled_s": 90.0,
        }
        assert example["attributes"]["ce-id"].endswith(":gpu_switch:1")
    elif kind in (BUDGET_WARNING, BUDGET_EXHAUSTED):  # no status change: the view, and the crossing
        share = 0.8 if kind == BUDGET_WARNING else 1.0
        assert example["data"]["status"] == Status.READY.value
        assert example["data"]["budget"] == {"max_cost_usd": 5.0, "estimated_cost_usd": 5.0 * share, "threshold": share}
        assert example["data"]["max_cost_usd"] == 5.0
        assert example["attributes"]["ce-id"].endswith(f":{kind}:1")
    else:
        assert example["data"]["status"] == kind
        assert "gpu_switch" not in example["data"] and "budget" not in example["data"]


def test_binary_mode_attributes_and_stable_id() -> None:
    doc = event_examples.example_document(Status.READY)
    data, attributes = pubsub_message(lifecycle_event(Deployment.from_firestore(doc)))
    assert attributes["ce-specversion"] == "1.0"
    assert attributes["ce-source"] == "//visgate/deployments"
    assert attributes["ce-type"] == "visgate.deployment.ready"
    assert attributes["ce-subject"] == doc["deployment_id"]
    assert attributes["content-type"] == "application/json"
    again = pubsub_message(lifecycle_event(Deployment.from_firestore(doc)))[1]
    assert again["ce-id"] == attributes["ce-id"]  # the same transition, the same id
    body = json.loads(data)
    assert "owner" not in body  # the public view only
    received = parse_message(attributes, data)
    assert (received.status, received.subject, received.data) == ("ready", doc["deployment_id"], body)


def test_examples_are_exactly_the_event_types() -> None:
    files = {path.name for path in (DOCS / "examples").glob("*.json")}
    assert files == {f"visgate.deployment.{kind}.json" for kind in event_examples.EVENT_KINDS}
    assert set(SCHEMA["properties"]["attributes"]["properties"]["ce-type"]["enum"]) == {
        f"visgate.deployment.{kind}" for kind in event_examples.EVENT_KINDS
    }


def test_schema_documents_every_public_field() -> None:
    documented = set(SCHEMA["$defs"]["DeploymentView"]["properties"])
    assert set(DeploymentView.model_fields) <= documented, "the schema only ever gains fields: add the new ones"


def test_other_messages_on_the_topic_are_not_lifecycle_events() -> None:
    with pytest.raises(NotALifecycleEventError):
        parse_message({"deployment_id": "x"}, b"{}")
    with pytest.raises(NotALifecycleEventError):
        parse_message(
            {"ce-type": "other.type", "ce-id": "1", "ce-subject": "s", "ce-time": "2026-01-01T00:00:00Z"}, b"{}"
        )

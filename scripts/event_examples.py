"""Write docs/events/examples/<ce-type>.json: one example event per status and one GPU switch, built by
shared/deployments/events.py.

Run ``python -m scripts.event_examples`` after a change to the event or the public view; a test checks the files are
up to date and valid against docs/events/deployment-event.schema.json.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shared.deployments.events import (
    BUDGET_EXHAUSTED,
    BUDGET_WARNING,
    GPU_SWITCHED,
    BudgetCrossing,
    GpuSwitch,
    budget_event,
    gpu_switch_event,
    lifecycle_event,
    pubsub_message,
)
from shared.document import Deployment
from shared.lifecycle import Status

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "events" / "examples"
_ID = "3f2c1e0a9b8d4c7e8f6a5b4c3d2e1f00"
_ORDER = [
    Status.VALIDATING,
    Status.SELECTING_GPU,
    Status.CREATING_ENDPOINT,
    Status.DOWNLOADING_MODEL,
    Status.LOADING_MODEL,
    Status.READY,
    Status.STOPPED,
    Status.FAILED,
    Status.DELETING,
    Status.DELETED,
]


# Every status but validating: a deployment is created in it (the 202 answer), it is never entered.
EVENT_STATUSES = [status for status in Status if status is not Status.VALIDATING]
# The suffix of every ce-type: the statuses entered, the GPU switch and the budget crossings (no status change).
EVENT_KINDS = [status.value for status in EVENT_STATUSES] + [GPU_SWITCHED, BUDGET_WARNING, BUDGET_EXHAUSTED]


def example_document(status: Status) -> dict[str, Any]:
    """A deployment document as the store holds it when it has just entered ``status``."""
    created = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    stamps = {s.value: created + timedelta(seconds=5 * n) for n, s in enumerate(_ORDER[: _ORDER.index(status) + 1])}
    doc: dict[str, Any] = {
        "deployment_id": _ID,
        "owner": "t_0000000000000000000000000000000000000000",
        "status": status.value,
        "hf_model_id": "stabilityai/sd-turbo",
        "revision": "main",
        "cache_scope": "off",
        "workers_min": 0,
        "workers_max": 1,
        "idle_timeout_seconds": 120,
        "user_webhook_url": "https://example.com/hooks/visgate",
        "created_at": created,
        "updated_at": stamps[status.value],
        "phase_timestamps": stamps,
    }
    if _ORDER.index(status) >= _ORDER.index(Status.CREATING_ENDPOINT):
        doc |= {
            "model_commit_sha": "1681ed09e0cff58eeb41e878a49893228b78b94c",
            "vram_estimate_gb": 6.2,
            "gpu": {"window": ["AMPERE_16", "ADA_24"]},
            "runpod": {"endpoint_id": "abc123def456gh", "endpoint_url": "https://api.runpod.ai/v2/abc123def456gh"},
        }
    if status is Status.DOWNLOADING_MODEL:
        doc["progress"] = {"bytes_done": 1_048_576, "bytes_total": 5_242_880_000}
    if _ORDER.index(status) >= _ORDER.index(Status.READY) and status is not Status.FAILED:
        doc["gpu"] = {**doc["gpu"], "pool_in_use": "AMPERE_16"}
        doc["timings"] = {"download_s": 41.2, "load_s": 6.3, "warmup_s": 1.1}
    if status is Status.FAILED:
        doc |= {"error": {"code": "no_capacity", "message": "no GPU capacity in any fitting pool for 90 s"}}
    if status is Status.STOPPED:
        doc |= {"stopped_at": stamps[status.value], "stop_reason": "user"}
    return doc


def example(kind: str) -> dict[str, Any]:
    """The Pub/Sub message of one event kind: a status entered, or a GPU switch of a throttled endpoint."""
    if kind == GPU_SWITCHED:
        doc = Deployment.from_firestore(example_document(Status.CREATING_ENDPOINT))
        at = doc.phase_timestamps[Status.CREATING_ENDPOINT] + timedelta(seconds=95)
        switch = GpuSwitch(from_pools=["AMPERE_16", "ADA_24"], to=["AMPERE_24", "ADA_32_PRO"], throttled_s=90.0)
        event = gpu_switch_event(doc, 1, at, switch)
    elif kind in (BUDGET_WARNING, BUDGET_EXHAUSTED):
        share = 0.8 if kind == BUDGET_WARNING else 1.0
        stored = example_document(Status.READY) | {
            "max_cost_usd": 5.0,
            "usage": {"requests": 412, "completed": 410, "failed": 2, "images": 410, "estimated_cost_usd": 5.0 * share},
            "budget": {"generation": 1, "warned": None, "exhausted": None},
        }
        doc = Deployment.from_firestore(stored)
        at = doc.phase_timestamps[Status.READY] + timedelta(hours=3)
        crossing = BudgetCrossing(max_cost_usd=5.0, estimated_cost_usd=5.0 * share, threshold=share)
        event = budget_event(doc, kind, at, crossing)
    else:
        event = lifecycle_event(Deployment.from_firestore(example_document(Status(kind))))
    data, attributes = pubsub_message(event)
    return {"attributes": attributes, "data": json.loads(data), "ordering_key": _ID}


def render(kind: str) -> str:
    return json.dumps(example(kind), indent=2, sort_keys=True) + "\n"


def main() -> None:
    EXAMPLES.mkdir(parents=True, exist_ok=True)
    for kind in EVENT_KINDS:
        (EXAMPLES / f"visgate.deployment.{kind}.json").write_text(render(kind))


if __name__ == "__main__":
    main()

"""Server-Sent Events of one deployment, fed by a Firestore document listener (no polling)."""

from __future__ import annotations

import json
import queue
from collections.abc import Callable, Iterator
from typing import Any

from google.cloud import firestore

from shared.lifecycle import TERMINAL, Status
from shared.store import DEPLOYMENTS

HEARTBEAT_S = 15.0


def deployment_events(
    db: firestore.Client, deployment_id: str, max_seconds: float, render: Callable[[dict[str, Any]], str]
) -> Iterator[str]:
    """Yield an SSE ``deployment`` event per change until a terminal status or ``max_seconds`` (clients reconnect)."""
    changes: queue.Queue[dict[str, Any]] = queue.Queue()

    def on_snapshot(snapshots: list[Any], _changes: Any, _read_time: Any) -> None:
        for snap in snapshots:
            if snap.exists:
                changes.put(snap.to_dict())

    watch = db.collection(DEPLOYMENTS).document(deployment_id).on_snapshot(on_snapshot)
    try:
        yield "retry: 2000\n\n"
        remaining = max_seconds
        last_seq = None
        while remaining > 0:
            wait = min(HEARTBEAT_S, remaining)
            try:
                doc = changes.get(timeout=wait)
            except queue.Empty:
                remaining -= wait
                yield ": keep-alive\n\n"
                continue
            if doc.get("event_seq") == last_seq:
                continue
            last_seq = doc.get("event_seq")
            yield f"id: {last_seq}\nevent: deployment\ndata: {render(doc)}\n\n"
            if Status(doc["status"]) in TERMINAL:
                break
        yield f"event: end\ndata: {json.dumps({'deployment_id': deployment_id})}\n\n"
    finally:
        watch.unsubscribe()

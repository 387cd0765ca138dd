"""Server-Sent Events of one deployment, fed by a Firestore document listener (no polling).

The current state comes first, then every change. Each event's ``id`` is the document's ``event_seq`` (it grows with
every status change and log line), so a client that reconnects with ``Last-Event-ID`` gets only what is newer than
the event it saw last, never that event again (the state it missed meanwhile arrives as the current state). A
``: keep-alive`` comment goes out every 15 s of silence; the stream ends (``event: end``) after a terminal status.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable, Iterator
from typing import Any

from google.cloud import firestore

from shared.lifecycle import TERMINAL, Status
from shared.store import DEPLOYMENTS

HEARTBEAT_S = 15.0


def _seq(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def deployment_events(
    db: firestore.Client,
    deployment_id: str,
    max_seconds: float,
    render: Callable[[dict[str, Any]], str],
    last_event_id: str | None = None,
) -> Iterator[str]:
    """Yield an SSE ``deployment`` event per change until a terminal status or ``max_seconds`` (clients reconnect);
    with ``last_event_id``, only changes after that event."""
    changes: queue.Queue[dict[str, Any]] = queue.Queue()

    def on_snapshot(snapshots: list[Any], _changes: Any, _read_time: Any) -> None:
        for snap in snapshots:
            if snap.exists:
                changes.put(snap.to_dict())

    watch = db.collection(DEPLOYMENTS).document(deployment_id).on_snapshot(on_snapshot)
    try:
        yield "retry: 2000\n\n"
        deadline = time.monotonic() + max_seconds
        next_beat = time.monotonic() + HEARTBEAT_S
        last_seq = None
        seen_up_to = _seq(last_event_id) if last_event_id is not None else None
        while (now := time.monotonic()) < deadline:
            if now >= next_beat:
                next_beat = now + HEARTBEAT_S
                yield ": keep-alive\n\n"
            try:
                doc = changes.get(timeout=max(0.0, min(next_beat, deadline) - now))
            except queue.Empty:
                continue
            if doc.get("event_seq") == last_seq:
                continue
            last_seq = doc.get("event_seq")
            if seen_up_to is not None and (_seq(last_seq) or 0) <= seen_up_to:
                if Status(doc["status"]) in TERMINAL:
                    break  # the client saw the end already
                continue
            yield f"id: {last_seq}\nevent: deployment\ndata: {render(doc)}\n\n"
            if Status(doc["status"]) in TERMINAL:
                break
        yield f"event: end\ndata: {json.dumps({'deployment_id': deployment_id})}\n\n"
    finally:
        watch.unsubscribe()

"""JSON logs for Cloud Logging with correlation ids on every line.

Each entry adapter calls :func:`bind` with what identifies the work (deployment id, execution id, step, attempt);
the values live in a ContextVar so concurrent requests in one instance never mix them up.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("log_context", default={})  # noqa: B039

# Fields promoted to Cloud Logging labels, so they are searchable without parsing the payload.
_LABEL_FIELDS = ("deployment_id", "execution_id", "step")


class JsonFormatter(logging.Formatter):
    """One JSON object per line in Cloud Logging's structured format."""

    def format(self, record: logging.LogRecord) -> str:
        context = _context.get()
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
            **context,
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        labels = {name: str(entry[name]) for name in _LABEL_FIELDS if entry.get(name)}
        if labels:
            entry["logging.googleapis.com/labels"] = labels
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: int = logging.INFO) -> None:
    """Route the root logger to stdout as JSON (idempotent)."""
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add correlation fields to every log line written inside the block."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)

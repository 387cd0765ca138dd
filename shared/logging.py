"""JSON logs for Cloud Logging with correlation ids on every line.

Each entry adapter calls :func:`bind` with what identifies the work (deployment id, execution id, step, attempt);
the values live in a ContextVar so concurrent requests in one instance never mix them up.

No exception's text reaches a log line: an exception's message may quote user input (a Hub id with a newline), a
token or a key. The formatter writes an exception given as a log argument as its type (``<HFValidationError>``)
and a traceback (``exc_info``, Flask's own "Exception on /..." line included) as its frames and exception types
only; the step and ids come from the binding. An exception class whose text is ours alone and never quotes input
may say so with a true ``log_safe`` class attribute (a state machine refusal, a signature check).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import traceback
from collections.abc import Iterator, Mapping
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
            "message": _message(record),
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
            entry["exception"] = redacted_traceback(record.exc_info[1])
        return json.dumps(entry, default=str)


def redacted(value: Any) -> Any:
    """A log argument as it may be written: an exception as its type only (unless its class is ``log_safe``)."""
    if isinstance(value, BaseException):
        return str(value) if getattr(value, "log_safe", False) else f"<{type(value).__name__}>"
    return value


def _message(record: logging.LogRecord) -> str:
    """``record.getMessage()`` with every exception argument :func:`redacted`."""
    message = str(record.msg)
    args = record.args
    if not args:
        return message
    if isinstance(args, Mapping):
        return message % {key: redacted(value) for key, value in args.items()}
    return message % tuple(redacted(value) for value in args)


def redacted_traceback(exc: BaseException | None) -> str:
    """A traceback with the frames and the exception types of the chain, never an exception's text."""
    if exc is None:
        return ""
    lines: list[str] = []
    seen: set[int] = set()

    def walk(current: BaseException) -> None:
        seen.add(id(current))
        cause = current.__cause__
        context = None if current.__suppress_context__ else current.__context__
        if cause is not None and id(cause) not in seen:
            walk(cause)
            lines.append("\nThe above exception was the direct cause of the following exception:\n\n")
        elif context is not None and id(context) not in seen:
            walk(context)
            lines.append("\nDuring handling of the above exception, another exception occurred:\n\n")
        lines.append("Traceback (most recent call last):\n")
        lines.extend(traceback.StackSummary.extract(traceback.walk_tb(current.__traceback__)).format())
        kind = type(current)
        lines.append(f"{kind.__module__}.{kind.__qualname__} (message redacted)\n")

    walk(exc)
    return "".join(lines)


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

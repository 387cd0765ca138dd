"""No exception text in a log line (issue 18, point 14): exceptions as log arguments and tracebacks are redacted."""

from __future__ import annotations

import json
import logging

from shared.errors import IllegalTransitionError
from shared.logging import JsonFormatter, redacted_traceback
from shared.signing import SignatureError

CANARY = "hf_canary\nuser-input"


def _line(msg: str, *args: object, exc_info: BaseException | None = None) -> dict[str, object]:
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, msg, args, None)
    if exc_info is not None:
        record.exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    return dict(json.loads(JsonFormatter().format(record)))


def _raised() -> RuntimeError:
    try:
        try:
            raise ValueError(CANARY)
        except ValueError as inner:
            raise RuntimeError(f"wrapping {CANARY}") from inner
    except RuntimeError as exc:
        return exc


def test_an_exception_argument_is_written_as_its_type() -> None:
    line = _line("will be retried: %s (%s)", ValueError(CANARY), "step-1")
    assert line["message"] == "will be retried: <ValueError> (step-1)"
    assert _line("plain %(e)s", {"e": KeyError(CANARY)})["message"] == "plain <KeyError>"


def test_exceptions_of_our_own_fixed_text_may_say_so() -> None:
    assert _line("late (%s)", IllegalTransitionError("ready", "stopped"))["message"] == (
        "late (cannot move a deployment from ready to stopped)"
    )
    assert _line("refused: %s", SignatureError("webhook signature does not match"))["message"].endswith("match")


def test_a_traceback_keeps_frames_and_types_never_the_text() -> None:
    exc = _raised()
    line = _line("Exception on /_pubsub/x [POST]", exc_info=exc)
    text = str(line["exception"])
    assert CANARY not in text and "hf_canary" not in text
    assert "builtins.ValueError (message redacted)" in text
    assert "builtins.RuntimeError (message redacted)" in text
    assert "direct cause" in text and "_raised" in text
    assert redacted_traceback(None) == ""

"""The one conditional-write helper: a conflict runs the attempt again; too many end in RetryableError, never in a
stale answer; anything else is the caller's."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as gexc

from shared.conditional import until_written
from shared.errors import RetryableError


def test_a_conflict_runs_the_attempt_again_on_a_fresh_read() -> None:
    conflicts = [gexc.FailedPrecondition("changed"), gexc.AlreadyExists("made"), gexc.Aborted("contended")]

    def attempt() -> str:
        if conflicts:
            raise conflicts.pop(0)
        return "written"

    assert until_written(attempt, "the record") == "written"


def test_too_many_conflicts_are_retryable_not_a_stale_answer() -> None:
    calls = []

    def attempt() -> str:
        calls.append(1)
        raise gexc.FailedPrecondition("changed again")

    with pytest.raises(RetryableError, match="the record kept changing"):
        until_written(attempt, "the record", attempts=3)
    assert len(calls) == 3


def test_other_errors_are_the_callers() -> None:
    def attempt() -> str:
        raise gexc.NotFound("gone")

    with pytest.raises(gexc.NotFound):
        until_written(attempt, "the record")

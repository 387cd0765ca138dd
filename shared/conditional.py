"""One way to change a Firestore record that others may change at the same moment.

An attempt reads, decides and writes on a condition: ``last_update_time`` of what it read, or create-if-absent.
When the condition fails, someone else wrote first: :func:`until_written` runs the attempt again on a fresh read.
After :data:`ATTEMPTS` conflicts in a row it raises ``RetryableError`` (the request answers 503, the delivery is
retried later): never the stale record, never a blind write. Conditional writes, not transactions: on the
emulator a contended transaction costs seconds (docs/decisions/2026-11-status-writes-with-preconditions.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from google.api_core import exceptions as gexc

from shared.errors import RetryableError

# What a failed condition looks like: an update_time precondition (FailedPrecondition; Aborted inside a batch), a
# create over an existing document (AlreadyExists).
CONFLICTS = (gexc.FailedPrecondition, gexc.Aborted, gexc.AlreadyExists)
ATTEMPTS = 8

T = TypeVar("T")


def until_written(attempt: Callable[[], T], what: str, attempts: int = ATTEMPTS) -> T:
    """Run ``attempt`` (read, decide, conditional write; it returns what the caller gets) until its write is not
    refused by a conflict. ``what`` names the record in the error."""
    for _ in range(attempts):
        try:
            return attempt()
        except CONFLICTS:
            continue
    raise RetryableError(f"{what} kept changing under us")

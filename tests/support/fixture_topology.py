"""A small topology for testing the local stack itself (tests/integration/test_local_stack.py).

Its functions live in tests/support/fixture_functions/ and write what they receive to ``$FIXTURE_SINK_DIR``.
``not_written_yet`` has no source, so the host must skip it.
"""

from __future__ import annotations

from shared.topology import Function, PushSubscription, Queue, Schedule

FUNCTIONS: tuple[Function, ...] = (
    Function("echo_http", "echo_http", "http"),
    Function("echo_event", "echo_event", "cloudevent"),
    Function("not_written_yet", "not_written_yet", "http"),
)
TOPICS: tuple[str, ...] = ("fixture-events", "fixture-dead-letter")
TOPIC_DEAD_LETTER = "fixture-dead-letter"
SUBSCRIPTIONS: tuple[PushSubscription, ...] = (
    PushSubscription("fixture-events-push", "fixture-events", "echo_event", min_backoff_s=1, max_backoff_s=2),
)
QUEUES: tuple[Queue, ...] = (Queue("fixture-queue", "echo_http", max_attempts=3, min_backoff_s=1, max_backoff_s=2),)
SCHEDULES: tuple[Schedule, ...] = (
    Schedule("fixture-tick", "echo_http", "* * * * *", interval_s=1, path_suffix="/tick"),
)

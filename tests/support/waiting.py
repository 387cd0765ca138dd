"""Waiting in tests for what the functions do in the background: poll a probe, never a fixed sleep.

- :func:`eventually`: the one poll helper of the suite (every test that waits for a condition uses it).
- :func:`queue_passed` and :func:`tasks_in`: "nothing more happens" as a condition. The Cloud Tasks emulator runs
  the tasks of one queue one at a time, in order; once a no-op marker task scheduled now has run, every task that
  was running when it was scheduled has finished (and whatever it scheduled is in a queue). Then no task of the
  subject waiting in the queue means nothing more comes of it.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from shared.messages import Message

POLL_S = 0.05


def eventually(
    probe: Callable[[], Any],
    timeout_s: float = 20.0,
    *,
    interval_s: float = POLL_S,
    what: str | Callable[[], str] = "condition not met in time",
) -> Any:
    """The first truthy answer of ``probe`` (polled every ``interval_s``); fails the test after ``timeout_s``,
    saying ``what`` (a callable: asked then, to tell what was last seen)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() >= deadline:
            raise AssertionError(what() if callable(what) else what)
        time.sleep(interval_s)


def _tasks_client() -> Any:
    from shared.wiring import build_tasks_client

    return build_tasks_client(os.environ["CLOUD_TASKS_EMULATOR_HOST"])


def _queue_path(queue: str) -> str:
    from shared.config import BackgroundSettings, get_settings

    region = get_settings(BackgroundSettings).region
    return f"projects/{os.environ['GOOGLE_CLOUD_PROJECT']}/locations/{region}/queues/{queue}"


def tasks_in(queue: str, mentioning: str) -> list[str]:
    """The names of the tasks waiting in ``queue`` (listed with the real Cloud Tasks client against the emulator)
    whose name or body mentions ``mentioning`` (a deployment or job id)."""
    from google.cloud import tasks_v2

    listed = _tasks_client().list_tasks(
        request=tasks_v2.ListTasksRequest(parent=_queue_path(queue), response_view=tasks_v2.Task.View.FULL)
    )
    return [
        task.name
        for task in listed
        if mentioning in task.name or mentioning.encode() in bytes(task.http_request.body or b"")
    ]


def queue_passed(queue: str, base_url: str, path: str, marker: Message, timeout_s: float = 20.0) -> None:
    """Schedule ``marker`` (a message its function answers as a no-op) on ``queue`` now and wait until it has run:
    every task of the queue that was running before has finished by then."""
    from shared.tasks import TaskScheduler

    client = _tasks_client()
    parent = _queue_path(queue)
    name = f"marker-{uuid.uuid4().hex}"
    region = parent.split("/")[3]
    scheduler = TaskScheduler(lambda: client, os.environ["GOOGLE_CLOUD_PROJECT"], region, base_url)
    assert scheduler.schedule(queue, path, marker, name, 0)
    eventually(lambda: not tasks_in(queue, name), timeout_s, what=f"marker task {name} never ran")


def settled(queue: str, mentioning: str, *, base_url: str, path: str, marker: Message, timeout_s: float = 20.0) -> None:
    """Nothing more comes of ``mentioning`` on ``queue``: no task of it waits there (each one due has run), and none
    came back after a marker passed (a task that was running when the queue looked empty has finished)."""
    eventually(
        lambda: not tasks_in(queue, mentioning), timeout_s, what=lambda: f"still queued: {tasks_in(queue, mentioning)}"
    )
    queue_passed(queue, base_url, path, marker, timeout_s)
    assert tasks_in(queue, mentioning) == []


def no_webhook_pending(base_url: str, deployment_id: str) -> None:
    """No attempt of any delivery of the deployment waits or runs (``base_url``: where the webhooks function is)."""
    from shared.topology import QUEUE_WEBHOOK_DELIVERY
    from shared.webhooks.records import fresh_delivery_id
    from shared.webhooks.steps import DELIVER_PATH, WebhookAttempt

    marker = WebhookAttempt(delivery_id=fresh_delivery_id(), deployment_id=uuid.uuid4().hex)  # "no such delivery"
    settled(QUEUE_WEBHOOK_DELIVERY, deployment_id, base_url=base_url, path=DELIVER_PATH, marker=marker)


def no_check_pending(base_url: str, deployment_id: str, job_id: str) -> None:
    """No check of the job waits or runs in the job watch (``base_url``: where the job-watch function is)."""
    from shared.jobs.ends import WATCH_PATH
    from shared.messages import JobCheck
    from shared.topology import QUEUE_JOB_WATCH

    marker = JobCheck(deployment_id=uuid.uuid4().hex, job_id=f"marker-{uuid.uuid4().hex}")  # "no such job record"
    settled(QUEUE_JOB_WATCH, f"{deployment_id}-{job_id}", base_url=base_url, path=WATCH_PATH, marker=marker)

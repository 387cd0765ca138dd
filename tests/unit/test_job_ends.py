"""The pure parts of a job's end: the watch's delays, the webhook's type and body (and its size cap)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from shared.config import delays_s
from shared.jobs.ends import EVENT_TYPES, job_event_id, watch_delay, webhook_body
from shared.jobs.records import OUTCOME, InputSummary, JobRecord
from shared.runpod.client import JOB_FINAL_STATES
from shared.webhooks.records import delivery_id_for

CREATED = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def record(status: str = "COMPLETED", **fields: object) -> JobRecord:
    return JobRecord.model_validate(
        {
            "job_id": "job-1",
            "deployment_id": "d" * 32,
            "owner": "tenant-secret-id",
            "status": status,
            "input_summary": InputSummary(prompt_chars=12),
            "webhook_url": "https://hooks.example.com/jobs",
            "created_at": CREATED,
            "finished_at": CREATED + timedelta(seconds=3),
            "expires_at": CREATED + timedelta(days=7),
            **fields,
        }
    )


def test_the_watch_follows_its_schedule_then_repeats_the_last_delay() -> None:
    schedule = delays_s("1, 2,3,5 ,8")
    assert [watch_delay(n, schedule) for n in range(7)] == [1, 2, 3, 5, 8, 8, 8]


def test_every_final_state_has_its_webhook_type_and_usage_outcome() -> None:
    assert set(EVENT_TYPES) == set(JOB_FINAL_STATES) == set(OUTCOME)
    assert EVENT_TYPES["TIMED_OUT"] == "job.timed_out"


def test_the_body_is_the_job_as_the_api_shows_it_with_its_output_and_no_owner() -> None:
    output = {"images": [{"url": "https://bucket.example.com/a.png"}]}
    sent = json.loads(webhook_body(record(), output, 256 * 1024))
    assert sent["type"] == "job.completed"
    assert sent["timestamp"] == "2026-12-02T10:00:03Z"
    assert sent["data"]["job_id"] == "job-1" and sent["data"]["output"] == output
    assert "owner" not in sent["data"] and "tenant-secret-id" not in json.dumps(sent)
    assert "output_omitted" not in sent["data"]


def test_an_output_too_large_for_a_webhook_is_left_out_and_said_so() -> None:
    output = {"images": [{"image": "A" * 5000}]}
    body = webhook_body(record(), output, 2048)
    sent = json.loads(body)
    assert len(body) <= 2048
    assert sent["data"]["output"] is None and sent["data"]["output_omitted"] is True
    assert sent["data"]["status"] == "COMPLETED"


def test_one_job_end_is_one_delivery_id() -> None:
    assert delivery_id_for(job_event_id(record())) == delivery_id_for(job_event_id(record("FAILED")))
    assert job_event_id(record()) != job_event_id(record(job_id="job-2"))

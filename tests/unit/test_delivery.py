"""The delivery adapter's one outcome table (shared/delivery.py), for tasks and events alike."""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from cloudevents.http import CloudEvent
from flask import Request
from werkzeug.test import EnvironBuilder

from shared.delivery import Receiver, RedeliveryError, answer_event, answer_task, receive_event
from shared.envelopes import TaskDelivery
from shared.errors import PermanentError, RetryableError
from shared.messages import DeploymentRequested, ReadinessCheck

SECRET_TEXT = "rp_user_key_that_must_not_be_logged"


def _task_request(body: bytes) -> Request:
    headers = {"X-CloudTasks-TaskName": "t-1", "X-CloudTasks-TaskRetryCount": "2", "Content-Type": "application/json"}
    return Request(EnvironBuilder(method="POST", data=body, headers=headers).get_environ())


def _event(published: datetime, deployment_id: str = "d-1") -> CloudEvent:
    message = DeploymentRequested(deployment_id=deployment_id, requested_at=published).model_dump_json().encode()
    data = {
        "message": {
            "data": base64.b64encode(message).decode(),
            "messageId": "m-1",
            "publishTime": published.isoformat(),
        }
    }
    return CloudEvent(
        {"type": "google.cloud.pubsub.topic.v1.messagePublished", "source": "//pubsub", "id": "m-1"}, data
    )


def _raise(exc: BaseException) -> str:
    raise exc


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (lambda: "checked", 204),
        (lambda: _raise(RetryableError("Runpod is down")), 503),
        (lambda: _raise(ValueError(SECRET_TEXT)), 500),
    ],
)
def test_a_task_answers_by_the_table(outcome, status: int, caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver[TaskDelivery[ReadinessCheck]]("check", ReadinessCheck, lambda task: outcome())
    with caplog.at_level(logging.INFO):
        answer = answer_task(_task_request(ReadinessCheck(deployment_id="d-1").model_dump_json().encode()), receiver)
    assert answer.status_code == status
    assert SECRET_TEXT not in caplog.text  # a bug is logged by its type and stack, never its text


def test_a_malformed_task_is_acknowledged() -> None:
    receiver = Receiver[TaskDelivery[ReadinessCheck]]("check", ReadinessCheck, lambda task: _raise(AssertionError()))
    assert answer_task(_task_request(b'{"nope": 1}'), receiver).status_code == 204


def test_a_permanent_failure_fails_the_deployment_then_acknowledges() -> None:
    failed: list[tuple[str, str]] = []
    receiver = Receiver[TaskDelivery[ReadinessCheck]](
        "check",
        ReadinessCheck,
        lambda task: _raise(PermanentError("no_capacity", "no GPU")),
        fail=lambda deployment_id, exc: failed.append((deployment_id, exc.reason)),
    )
    body = ReadinessCheck(deployment_id="d-9").model_dump_json().encode()
    assert answer_task(_task_request(body), receiver).status_code == 204
    assert failed == [("d-9", "no_capacity")]


def test_an_event_is_redelivered_on_a_retryable_error_and_a_bug_without_their_text() -> None:
    now = datetime.now(UTC)
    for error in (RetryableError(SECRET_TEXT), KeyError(SECRET_TEXT)):
        receiver = Receiver[DeploymentRequested]("provision", DeploymentRequested, lambda m, e=error: _raise(e))
        with pytest.raises(RedeliveryError) as raised:
            receive_event(_event(now), receiver)
        assert SECRET_TEXT not in str(raised.value)


def test_an_old_event_is_dropped_or_given_to_the_late_step() -> None:
    old = datetime.now(UTC) - timedelta(hours=2)
    ran: list[str] = []
    dropping = Receiver[DeploymentRequested](
        "provision", DeploymentRequested, lambda m: ran.append("step") or "", max_event_age_s=3600
    )
    receive_event(_event(old), dropping)
    late = Receiver[DeploymentRequested](
        "provision",
        DeploymentRequested,
        lambda m: ran.append("step") or "",
        max_event_age_s=3600,
        late_step=lambda m: ran.append(f"late {m.deployment_id}") or "",
    )
    receive_event(_event(old), late)
    assert ran == ["late d-1"]


def test_an_http_function_reads_a_binary_cloudevent_and_acknowledges_what_is_none() -> None:
    seen: list[str] = []
    receiver = Receiver[DeploymentRequested](
        "dispatch", DeploymentRequested, lambda m: seen.append(m.deployment_id) or "done"
    )
    event = _event(datetime.now(UTC), "d-7")
    headers = {"ce-specversion": "1.0", "ce-id": "m-1", "ce-source": "//pubsub", "ce-type": event["type"]}
    request = Request(
        EnvironBuilder(
            method="POST", data=json.dumps(event.data), headers=headers, content_type="application/json"
        ).get_environ()
    )
    assert answer_event(request, receiver).status_code == 204
    assert seen == ["d-7"]
    not_an_event = Request(EnvironBuilder(method="POST", data=b"{}", content_type="application/json").get_environ())
    assert answer_event(not_an_event, receiver).status_code == 204

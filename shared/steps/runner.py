"""The one mapping from step outcomes to transport outcomes, used by every event-driven entry point.

- malformed delivery → logged and acknowledged (a retry cannot fix it);
- older than ``MAX_EVENT_AGE_S`` → dropped (stops a poison message that keeps failing from living forever), except
  for teardown: an entry point may name a ``late_step`` that still runs then (a delete, or the teardown of a failed
  deployment, is retried until done, however long Runpod is down);
- PermanentError → the deployment fails with its reason, is torn down, and the delivery is acknowledged;
- RetryableError (and anything unexpected, logged with its type and stack inside the correlation binding) →
  raised, so the function answers 500 and Pub/Sub / Cloud Tasks deliver again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from shared import logging as slog
from shared.envelopes import MalformedDeliveryError, TaskDelivery, parse_pubsub, parse_task
from shared.errors import PermanentError, RetryableError
from shared.http import log_unexpected
from shared.messages import _Message
from shared.steps.deps import StepDeps
from shared.steps.teardown import fail_deployment

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=_Message)


def handle_pubsub(
    event: Any,
    model: type[M],
    deps: StepDeps,
    step: Callable[[M, StepDeps], str],
    late_step: Callable[[M, StepDeps], str] | None = None,
) -> None:
    """Run ``step`` on the message of a Pub/Sub CloudEvent; past ``MAX_EVENT_AGE_S``, ``late_step`` or nothing."""
    try:
        delivery = parse_pubsub(event, model)
    except MalformedDeliveryError as exc:
        with slog.bind(execution_id=exc.delivery_id or None, step=step.__name__):
            logger.error("dropped a malformed delivery: %s", exc)
        return
    deployment_id = getattr(delivery.message, "deployment_id", None)
    with slog.bind(deployment_id=deployment_id, execution_id=delivery.message_id, step=step.__name__):
        run = step
        if delivery.age_s() > deps.settings.max_event_age_s:
            if late_step is None:
                logger.warning("dropped a delivery %.0f s old", delivery.age_s())
                return
            run = late_step
        _settle(deps, deployment_id, run.__name__, lambda: run(delivery.message, deps))


def handle_task(
    body: bytes,
    headers: Mapping[str, str],
    model: type[M],
    deps: StepDeps,
    step: Callable[[TaskDelivery[M], StepDeps], str],
) -> None:
    """Run ``step`` on a Cloud Tasks delivery."""
    try:
        delivery = parse_task(body, headers, model)
    except MalformedDeliveryError as exc:
        with slog.bind(execution_id=exc.delivery_id or None, step=step.__name__):
            logger.error("dropped a malformed task: %s", exc)
        return
    deployment_id = getattr(delivery.message, "deployment_id", None)
    with slog.bind(
        deployment_id=deployment_id, execution_id=delivery.task_name, step=step.__name__, attempt=delivery.retry_count
    ):
        _settle(deps, deployment_id, step.__name__, lambda: step(delivery, deps))


def _settle(deps: StepDeps, deployment_id: str | None, step_name: str, run: Callable[[], str]) -> None:
    try:
        logger.info(run())
    except PermanentError as exc:
        if deployment_id:
            fail_deployment(deps, deployment_id, exc.reason, exc.message)
    except RetryableError as exc:
        logger.warning("will be retried: %s", exc)
        raise
    except Exception as exc:
        # Logged here, inside the binding (Flask's own log would lack the deployment id), then retried.
        log_unexpected(exc, step_name)
        raise

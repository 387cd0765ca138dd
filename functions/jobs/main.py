"""jobs (Cloud Tasks ``job-watch``): follows each inference job its answer did not see end; records and announces
the end (shared/steps/job_watch.py)."""

import logging

import functions_framework
from flask import Request, Response

from shared import logging as slog
from shared.config import ProvisioningSettings, get_settings
from shared.envelopes import MalformedDeliveryError, parse_task
from shared.http import answer_unrouted_in_error_shape, task_outcome
from shared.messages import JobCheck
from shared.steps.job_watch import watch_job
from shared.wiring import job_watch_deps

slog.configure()
logger = logging.getLogger(__name__)
answer_unrouted_in_error_shape()
_deps = job_watch_deps(get_settings(ProvisioningSettings))


@functions_framework.http
def jobs(request: Request) -> Response:
    try:
        task = parse_task(request.get_data(), dict(request.headers), JobCheck)
    except MalformedDeliveryError as exc:
        with slog.bind(execution_id=exc.delivery_id or None, step="watch_job"):
            logger.error("dropped a malformed task: %s", exc)
        return Response(status=204)
    check = task.message
    binding = {"deployment_id": check.deployment_id, "job_id": check.job_id, "execution_id": task.task_name}
    with slog.bind(step="watch_job", **binding):
        return task_outcome("watch_job", lambda: watch_job(task, _deps))

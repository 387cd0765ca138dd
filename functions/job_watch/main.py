"""job-watch (Cloud Tasks ``job-watch``): follows each inference job its answer did not see end; records and announces
the end (shared/jobs/watch.py)."""

import functions_framework
from flask import Request, Response

from shared import logging as slog
from shared.config import BackgroundSettings, get_settings
from shared.delivery import Receiver, answer_task
from shared.envelopes import TaskDelivery
from shared.http import answer_unrouted_in_error_shape
from shared.jobs.watch import watch_job
from shared.messages import JobCheck
from shared.wiring import job_watch_deps

slog.configure()
answer_unrouted_in_error_shape()
_deps = job_watch_deps(get_settings(BackgroundSettings))
_receiver = Receiver[TaskDelivery[JobCheck]]("watch_job", JobCheck, lambda task: watch_job(task, _deps))


@functions_framework.http
def job_watch(request: Request) -> Response:
    return answer_task(request, _receiver)

"""readiness (Cloud Tasks ``readiness``): the watchdog of a silent worker; reschedules itself with backoff."""

import functions_framework
from flask import Request, Response

from shared import logging as slog
from shared.config import BackgroundSettings, get_settings
from shared.delivery import Receiver, answer_task
from shared.deployments.readiness import check_readiness
from shared.deployments.teardown import deployment_failer
from shared.envelopes import TaskDelivery
from shared.http import answer_unrouted_in_error_shape
from shared.messages import ReadinessCheck
from shared.wiring import step_deps

slog.configure()
answer_unrouted_in_error_shape()
_deps = step_deps(get_settings(BackgroundSettings))
_receiver = Receiver[TaskDelivery[ReadinessCheck]](
    "check_readiness", ReadinessCheck, lambda task: check_readiness(task, _deps), fail=deployment_failer(_deps)
)


@functions_framework.http
def readiness(request: Request) -> Response:
    return answer_task(request, _receiver)

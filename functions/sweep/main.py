"""sweep (HTTP): Cloud Scheduler's run at ``/run`` finds what is due; each task of the ``sweep`` queue does one."""

import functions_framework
from flask import Request, Response

from shared import logging as slog
from shared.config import BackgroundSettings, get_settings
from shared.delivery import Receiver, answer_task
from shared.deployments.sweep import handle_item, run_sweep
from shared.deployments.teardown import deployment_failer
from shared.envelopes import TaskDelivery
from shared.http import answer_unrouted_in_error_shape, json_response
from shared.messages import SweepItem
from shared.wiring import step_deps

slog.configure()
answer_unrouted_in_error_shape()
_deps = step_deps(get_settings(BackgroundSettings))
_receiver = Receiver[TaskDelivery[SweepItem]](
    "handle_item", SweepItem, lambda task: handle_item(task, _deps), fail=deployment_failer(_deps)
)


@functions_framework.http
def sweep(request: Request) -> Response:
    if request.path.rstrip("/").endswith("/run"):
        with slog.bind(step="sweep", execution_id=request.headers.get("X-CloudScheduler-JobName")):
            report = run_sweep(_deps)
        return json_response({"fanned_out": dict(report.fanned_out), "purged": report.purged, "s": report.seconds})
    return answer_task(request, _receiver)

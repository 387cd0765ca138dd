"""cleanup (Pub/Sub ``deployment-delete-requested``): tear down on Runpod, erase secrets, mark deleted."""

import functions_framework
from cloudevents.http import CloudEvent

from shared import logging as slog
from shared.config import BackgroundSettings, get_settings
from shared.delivery import Receiver, receive_event
from shared.deployments.cleanup import cleanup as cleanup_step
from shared.deployments.teardown import deployment_failer
from shared.messages import DeploymentDeleteRequested
from shared.wiring import step_deps

slog.configure()
_deps = step_deps(get_settings(BackgroundSettings))
_receiver = Receiver[DeploymentDeleteRequested](
    "cleanup",
    DeploymentDeleteRequested,
    lambda message: cleanup_step(message, _deps),
    fail=deployment_failer(_deps),
    max_event_age_s=_deps.settings.max_event_age_s,
    # However late: a delete is retried until done (a repeat after it finished changes nothing).
    late_step=lambda message: cleanup_step(message, _deps),
)


@functions_framework.cloud_event
def cleanup(event: CloudEvent) -> None:
    receive_event(event, _receiver)

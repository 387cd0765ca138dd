"""provision (Pub/Sub ``deployment-requested``): model check, GPU choice, the Runpod endpoint, its warm-up job."""

import functions_framework
from cloudevents.http import CloudEvent

from shared import logging as slog
from shared.config import BackgroundSettings, get_settings
from shared.delivery import Receiver, receive_event
from shared.deployments.provision import finish_failed_teardown
from shared.deployments.provision import provision as provision_step
from shared.deployments.teardown import deployment_failer
from shared.messages import DeploymentRequested
from shared.wiring import step_deps

slog.configure()
_deps = step_deps(get_settings(BackgroundSettings))
_receiver = Receiver[DeploymentRequested](
    "provision",
    DeploymentRequested,
    lambda message: provision_step(message, _deps),
    fail=deployment_failer(_deps),
    max_event_age_s=_deps.settings.max_event_age_s,
    # Too late to provision, but a failed deployment's teardown still finishes.
    late_step=lambda message: finish_failed_teardown(message, _deps),
)


@functions_framework.cloud_event
def provision(event: CloudEvent) -> None:
    receive_event(event, _receiver)

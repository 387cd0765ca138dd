"""provision (Pub/Sub ``deployment-requested``): model check, GPU choice, Runpod template + endpoint, warm-up."""

import functions_framework
from cloudevents.http import CloudEvent

from shared import logging as slog
from shared.config import ProvisioningSettings, get_settings
from shared.messages import DeploymentRequested
from shared.steps.provision import finish_failed_teardown
from shared.steps.provision import provision as provision_step
from shared.steps.runner import handle_pubsub
from shared.wiring import step_deps

slog.configure()
_deps = step_deps(get_settings(ProvisioningSettings))


@functions_framework.cloud_event
def provision(event: CloudEvent) -> None:
    handle_pubsub(event, DeploymentRequested, _deps, provision_step, late_step=finish_failed_teardown)

"""cleanup (Pub/Sub ``deployment-delete-requested``): tear down on Runpod, erase secrets, mark deleted."""

import functions_framework
from cloudevents.http import CloudEvent

from shared import logging as slog
from shared.config import ProvisioningSettings, get_settings
from shared.messages import DeploymentDeleteRequested
from shared.steps.cleanup import cleanup as cleanup_step
from shared.steps.runner import handle_pubsub
from shared.wiring import step_deps

slog.configure()
_deps = step_deps(get_settings(ProvisioningSettings))


@functions_framework.cloud_event
def cleanup(event: CloudEvent) -> None:
    # However late: a delete is retried until done (a repeat after it finished changes nothing).
    handle_pubsub(event, DeploymentDeleteRequested, _deps, cleanup_step, late_step=cleanup_step)

"""The collaborators every provisioning step may use, built once per instance by :mod:`shared.wiring`."""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import Settings
from shared.crypto import Sealer
from shared.deployments import Lifecycle
from shared.gpu import GpuCatalog
from shared.hub import HubInspector
from shared.pubsub import Publisher
from shared.runpod.client import RunpodConnector
from shared.store import DeploymentStore
from shared.tasks import TaskScheduler


@dataclass(frozen=True)
class StepDeps:
    settings: Settings
    store: DeploymentStore
    lifecycle: Lifecycle
    publisher: Publisher
    sealer: Sealer
    runpod: RunpodConnector
    hub: HubInspector
    gpus: GpuCatalog
    tasks: TaskScheduler


def resource_name(deployment_id: str) -> str:
    """The Runpod template and endpoint name of a deployment: deterministic, so a retry finds what it created."""
    return f"visgate-{deployment_id}"


def is_resource_of(name: str, deployment_id: str) -> bool:
    """Whether a Runpod resource name is this deployment's (Runpod marks FlashBoot endpoints with a ``-fb`` suffix)."""
    ours = resource_name(deployment_id)
    return name in (ours, f"{ours}-fb")

"""The collaborators every provisioning step may use, built once per instance by :mod:`shared.wiring`."""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import Settings
from shared.crypto import Sealer
from shared.deployments.credentials import open_credentials
from shared.deployments.hub import HubInspector
from shared.deployments.transitions import Transitions
from shared.gpu import GpuCatalog
from shared.models import SealedCredentials
from shared.pubsub import Publisher
from shared.runpod.client import RunpodConnector
from shared.store import DeploymentStore
from shared.tasks import TaskScheduler


@dataclass(frozen=True)
class StepDeps:
    settings: Settings
    store: DeploymentStore
    transitions: Transitions
    publisher: Publisher
    sealer: Sealer
    runpod: RunpodConnector
    hub: HubInspector
    gpus: GpuCatalog
    tasks: TaskScheduler

    def credentials(self, deployment_id: str) -> SealedCredentials | None:
        """The deployment's sealed credentials, opened (None once erased; CredentialsUnreadableError if they do
        not open)."""
        return open_credentials(self.store, self.sealer, deployment_id)

"""Builds each function's collaborators once per instance (cold start), from its settings object."""

from __future__ import annotations

from google.cloud import firestore

from shared.config import SealingSettings, Settings
from shared.crypto import Sealer
from shared.gpu import GpuCatalog
from shared.hub import HubInspector
from shared.pubsub import Publisher, build_publisher
from shared.runpod.client import RunpodConnector
from shared.steps.deps import StepDeps
from shared.store import DeploymentStore
from shared.tasks import TaskScheduler, build_tasks_client
from shared.transitions import Transitions


def firestore_client(settings: Settings) -> firestore.Client:
    return firestore.Client(project=settings.google_cloud_project)


def core(settings: SealingSettings) -> tuple[firestore.Client, DeploymentStore, Publisher, Transitions, Sealer]:
    db = firestore_client(settings)
    store = DeploymentStore(db, settings.event_log_max_lines)
    publisher = Publisher(build_publisher(), settings.google_cloud_project)
    return db, store, publisher, Transitions(store, publisher), Sealer(settings.sealing_key.get_secret_value())


def step_deps(settings: SealingSettings) -> StepDeps:
    """Everything the provisioning steps (provision, callback, readiness, cleanup) use."""
    _, store, publisher, transitions, sealer = core(settings)
    tasks = TaskScheduler(
        build_tasks_client(settings.cloud_tasks_emulator_host),
        settings.google_cloud_project,
        settings.region,
        settings.functions_base_url,
        settings.tasks_service_account_email,
    )
    return StepDeps(
        settings=settings,
        store=store,
        transitions=transitions,
        publisher=publisher,
        sealer=sealer,
        runpod=RunpodConnector(
            settings.runpod_api_base_url, settings.runpod_endpoint_base_url, settings.runpod_timeout_s
        ),
        hub=HubInspector(settings.hf_endpoint, settings.hf_timeout_s, settings.worker_dtype),
        gpus=GpuCatalog(settings.gpu_catalog_cache_s),
        tasks=tasks,
    )

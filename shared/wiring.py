"""Builds each function's collaborators once per instance (cold start), from its settings object."""

from __future__ import annotations

from datetime import timedelta

from google.cloud import firestore

from shared.config import SealingSettings, Settings
from shared.crypto import Sealer
from shared.deployments.budget import BudgetGuard
from shared.deployments.deps import StepDeps
from shared.deployments.hub import HubInspector
from shared.deployments.transitions import Transitions
from shared.gpu import GpuCatalog
from shared.jobs.ends import JobEnds
from shared.jobs.records import JobStore
from shared.jobs.watch import JobWatchDeps
from shared.pubsub import Publisher, build_publisher
from shared.runpod.client import RunpodConnector
from shared.store import DeploymentStore
from shared.tasks import TaskScheduler, build_tasks_client
from shared.webhooks.records import DeliveryRecords


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
    return StepDeps(
        settings=settings,
        store=store,
        transitions=transitions,
        publisher=publisher,
        sealer=sealer,
        runpod=runpod_connector(settings),
        hub=HubInspector(settings.hf_endpoint, settings.hf_timeout_s, settings.worker_dtype),
        gpus=GpuCatalog(settings.gpu_catalog_cache_s),
        tasks=task_scheduler(settings),
    )


def task_scheduler(settings: Settings) -> TaskScheduler:
    """The Cloud Tasks client (the emulator's when configured) that schedules onto our functions."""
    return TaskScheduler(
        lambda: build_tasks_client(settings.cloud_tasks_emulator_host),
        settings.google_cloud_project,
        settings.region,
        settings.functions_base_url,
        settings.tasks_service_account_email,
    )


def job_ends(settings: Settings, db: firestore.Client, tasks: TaskScheduler) -> JobEnds:
    store = DeploymentStore(db, settings.event_log_max_lines)
    publisher = Publisher(build_publisher(), settings.google_cloud_project)
    return JobEnds(
        settings=settings,
        jobs=JobStore(db, timedelta(days=settings.job_record_ttl_days)),
        records=DeliveryRecords(db),
        tasks=tasks,
        catalog=GpuCatalog(settings.gpu_catalog_cache_s),
        budget=BudgetGuard(store, Transitions(store, publisher)),
    )


def job_watch_deps(settings: SealingSettings) -> JobWatchDeps:
    """Everything the jobs function uses."""
    db = firestore_client(settings)
    store = DeploymentStore(db, settings.event_log_max_lines)
    return JobWatchDeps(
        store=store,
        sealer=Sealer(settings.sealing_key.get_secret_value()),
        runpod=runpod_connector(settings),
        ends=job_ends(settings, db, task_scheduler(settings)),
    )


def runpod_connector(settings: Settings) -> RunpodConnector:
    return RunpodConnector(settings.runpod_api_base_url, settings.runpod_endpoint_base_url, settings.runpod_timeout_s)

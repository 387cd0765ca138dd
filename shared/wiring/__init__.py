"""The composition root: each deployable's collaborators, built once per instance (cold start) from its settings.

One function per deployable, called by its ``functions/<name>/main.py``: :func:`step_deps` (provision, readiness,
cleanup, sweep), :func:`job_watch_deps` (job-watch), :func:`webhook_entry` (webhooks),
:func:`shared.wiring.callback.callback_app` (callback) and :func:`shared.wiring.intake.intake_api` (intake); those two
have their own modules so that no other function imports the API, the S3 client or the Firebase app.

This package is the one place that constructs clients (Firestore, Pub/Sub, Cloud Tasks, Runpod, S3, Firebase): route
classes and steps are handed theirs, so an instance holds one of each.
"""

from __future__ import annotations

from datetime import timedelta

import google.cloud.pubsub_v1 as pubsub_v1  # noqa: PLR0402  (no py.typed: see shared/pubsub.py)
import grpc
from google.cloud import firestore, tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

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
from shared.pubsub import Publisher
from shared.runpod.client import RunpodConnector
from shared.store import DeploymentStore
from shared.tasks import TaskScheduler
from shared.webhooks.entry import Entry
from shared.webhooks.records import DeliveryRecords
from shared.webhooks.secrets import WebhookSecrets
from shared.webhooks.steps import WebhookDeps

# --- the clients --------------------------------------------------------------------------------------------------


def firestore_client(settings: Settings) -> firestore.Client:
    return firestore.Client(project=settings.google_cloud_project)


def build_publisher() -> pubsub_v1.PublisherClient:
    """One client per instance; a short batching latency because every publish is awaited by a request."""
    batching = pubsub_v1.types.BatchSettings(max_messages=100, max_latency=0.005)
    # Ordering keys: lifecycle events are published with the deployment id as their key (shared/deployments/events.py).
    options = pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
    return pubsub_v1.PublisherClient(batch_settings=batching, publisher_options=options)


def build_tasks_client(emulator_host: str | None) -> tasks_v2.CloudTasksClient:
    """The real client, pointed at the emulator when one is configured."""
    if emulator_host:
        channel = grpc.insecure_channel(emulator_host)
        return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
    return tasks_v2.CloudTasksClient()


def task_scheduler(settings: Settings) -> TaskScheduler:
    """The Cloud Tasks client (the emulator's when configured) that schedules onto our functions; built on its first
    task."""
    return TaskScheduler(
        lambda: build_tasks_client(settings.cloud_tasks_emulator_host),
        settings.google_cloud_project,
        settings.region,
        settings.functions_base_url,
        settings.tasks_service_account_email,
    )


def runpod_connector(settings: Settings) -> RunpodConnector:
    return RunpodConnector(settings.runpod_api_base_url, settings.runpod_endpoint_base_url, settings.runpod_timeout_s)


def core(settings: SealingSettings) -> tuple[firestore.Client, DeploymentStore, Publisher, Transitions, Sealer]:
    """Firestore, the store over it, Pub/Sub, the transitions that publish, the sealer: what every function holds."""
    db = firestore_client(settings)
    store = DeploymentStore(db, settings.event_log_max_lines)
    publisher = Publisher(build_publisher(), settings.google_cloud_project)
    return db, store, publisher, Transitions(store, publisher), Sealer(settings.sealing_key.get_secret_value())


# --- provision, readiness, cleanup, sweep (and the callback's steps) ----------------------------------------------


def step_deps(settings: SealingSettings) -> StepDeps:
    """Everything the provisioning steps (provision, callback, readiness, cleanup, sweep) use."""
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


# --- job-watch ----------------------------------------------------------------------------------------------------


def job_ends(
    settings: SealingSettings, db: firestore.Client, tasks: TaskScheduler, transitions: Transitions | None = None
) -> JobEnds:
    """The end of a job, on the instance's ``transitions`` (a store on ``db`` and a Pub/Sub client when none is
    given)."""
    if transitions is None:
        publisher = Publisher(build_publisher(), settings.google_cloud_project)
        transitions = Transitions(DeploymentStore(db, settings.event_log_max_lines), publisher)
    return JobEnds(
        settings=settings,
        jobs=JobStore(db, timedelta(days=settings.job_record_ttl_days)),
        records=DeliveryRecords(db),
        tasks=tasks,
        catalog=GpuCatalog(settings.gpu_catalog_cache_s),
        budget=BudgetGuard(transitions.store, transitions),
    )


def job_watch_deps(settings: SealingSettings) -> JobWatchDeps:
    """Everything the job-watch function uses."""
    db, store, _, transitions, sealer = core(settings)
    return JobWatchDeps(
        store=store,
        sealer=sealer,
        runpod=runpod_connector(settings),
        ends=job_ends(settings, db, task_scheduler(settings), transitions),
    )


# --- webhooks -----------------------------------------------------------------------------------------------------


def webhook_collaborators(
    settings: SealingSettings, db: firestore.Client, store: DeploymentStore, sealer: Sealer, tasks: TaskScheduler
) -> WebhookDeps:
    """The webhook steps' collaborators on an instance's clients (the webhooks function's, or the intake's, which
    redelivers)."""
    secrets = WebhookSecrets(db, sealer, settings.webhook_secret_overlap_s)
    return WebhookDeps(settings, store, DeliveryRecords(db), secrets, tasks)


def webhook_deps(settings: SealingSettings) -> WebhookDeps:
    """Everything the webhooks function's steps use."""
    db = firestore_client(settings)
    store = DeploymentStore(db, settings.event_log_max_lines)
    sealer = Sealer(settings.sealing_key.get_secret_value())
    return webhook_collaborators(settings, db, store, sealer, task_scheduler(settings))


def webhook_entry(settings: SealingSettings) -> Entry:
    return Entry(webhook_deps(settings))

"""The intake function's composition root: the API, its route classes and what they talk to, each built once."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from google.cloud import firestore

from shared.config import IntakeSettings
from shared.crypto import Sealer
from shared.deployments.transitions import Transitions
from shared.intake.app import IntakeApi
from shared.intake.client_tokens import ClientTokenIssuer
from shared.intake.keys import KeyVerifier
from shared.intake.lifecycle_routes import LifecycleRoutes
from shared.intake.metrics import RequestCounters
from shared.intake.notify import NotifyRoutes
from shared.intake.steps import IntakeDeps
from shared.jobs.invoke_keys import InvokeKeyStore
from shared.jobs.routes import JobDeps, JobRoutes
from shared.pubsub import Publisher
from shared.runpod.client import RunpodConnector
from shared.store import DeploymentStore
from shared.tasks import TaskScheduler
from shared.wiring import core, job_ends, runpod_connector, task_scheduler, webhook_collaborators


@dataclass(frozen=True)
class IntakeClients:
    """What one intake instance talks to, each built once (a test replaces one, ``dataclasses.replace``, to inject a
    fault: the transitions and the request counters keep the store they were built on)."""

    db: firestore.Client
    store: DeploymentStore
    publisher: Publisher
    transitions: Transitions
    sealer: Sealer
    runpod: RunpodConnector
    tasks: TaskScheduler
    counters: RequestCounters


def intake_clients(settings: IntakeSettings) -> IntakeClients:
    db, store, publisher, transitions, sealer = core(settings)
    runpod, tasks = runpod_connector(settings), task_scheduler(settings)
    return IntakeClients(db, store, publisher, transitions, sealer, runpod, tasks, RequestCounters(store))


def intake_deps(settings: IntakeSettings, clients: IntakeClients) -> IntakeDeps:
    """What the intake's steps use (the create step, the key check)."""
    keys = KeyVerifier(
        clients.store,
        clients.runpod,
        verdict_ttl_s=settings.key_verdict_ttl_s,
        refusal_ttl_s=settings.key_refusal_ttl_s,
        refusals_per_address_per_minute=settings.refused_keys_per_address_per_minute,
        reverify_sensitive_s=settings.key_reverify_sensitive_s,
    )
    return IntakeDeps(settings, clients.store, clients.transitions, clients.publisher, clients.sealer, keys)


def job_routes(settings: IntakeSettings, clients: IntakeClients) -> JobRoutes:
    """The inference routes (jobs, invoke keys, usage, GPUs)."""
    ends = job_ends(settings, clients.db, clients.tasks, clients.transitions)
    return JobRoutes(
        JobDeps(
            settings=settings,
            store=clients.store,
            invoke_keys=InvokeKeyStore(clients.db),
            sealer=clients.sealer,
            runpod=clients.runpod,
            ends=ends,
        )
    )


def intake_api(
    settings: IntakeSettings,
    clients: IntakeClients | None = None,
    *,
    jobs: JobRoutes | None = None,
    clock: Callable[[], float] = time.time,
) -> IntakeApi:
    """The intake function's API; ``clients``, ``jobs`` and ``clock`` as the function builds them unless given."""
    clients = clients or intake_clients(settings)
    deps = intake_deps(settings, clients)
    webhooks = webhook_collaborators(settings, clients.db, clients.store, clients.sealer, clients.tasks)
    tokens = ClientTokenIssuer(settings.google_cloud_project, settings.client_token_service_account_email)
    return IntakeApi(
        deps,
        clients.db,
        clients.counters,
        lifecycle=LifecycleRoutes(deps, clients.runpod, clients.tasks),
        jobs=jobs or job_routes(settings, clients),
        notify=NotifyRoutes(deps, webhooks, tokens),
        clock=clock,
    )

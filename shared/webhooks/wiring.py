"""Builds the webhooks function's collaborators once per instance (cold start)."""

from __future__ import annotations

from shared.config import SealingSettings
from shared.crypto import Sealer
from shared.store import DeploymentStore
from shared.tasks import TaskScheduler
from shared.webhooks.records import DeliveryRecords
from shared.webhooks.secrets import WebhookSecrets
from shared.webhooks.steps import WebhookDeps
from shared.wiring import firestore_client, task_scheduler


def webhook_secrets(db: object, settings: SealingSettings) -> WebhookSecrets:
    sealer = Sealer(settings.sealing_key.get_secret_value())
    return WebhookSecrets(db, sealer, settings.webhook_secret_overlap_s)  # type: ignore[arg-type]


def webhook_deps(settings: SealingSettings, tasks: TaskScheduler | None = None) -> WebhookDeps:
    db = firestore_client(settings)
    return WebhookDeps(
        settings=settings,
        store=DeploymentStore(db, settings.event_log_max_lines),
        records=DeliveryRecords(db),
        secrets=webhook_secrets(db, settings),
        tasks=tasks or task_scheduler(settings),
    )

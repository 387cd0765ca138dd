"""Builds each function's collaborators once per instance (cold start), from the one settings object."""

from __future__ import annotations

from google.cloud import firestore

from shared.config import Settings
from shared.crypto import Sealer
from shared.deployments import Lifecycle
from shared.pubsub import Publisher, build_publisher
from shared.store import DeploymentStore


def firestore_client(settings: Settings) -> firestore.Client:
    return firestore.Client(project=settings.google_cloud_project)


def core(settings: Settings) -> tuple[firestore.Client, DeploymentStore, Publisher, Lifecycle, Sealer]:
    db = firestore_client(settings)
    store = DeploymentStore(db, settings.event_log_max_lines)
    publisher = Publisher(build_publisher(), settings.google_cloud_project)
    return db, store, publisher, Lifecycle(store, publisher), Sealer(settings.sealing_key.get_secret_value())

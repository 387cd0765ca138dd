"""The one declaration of topics, push subscriptions, queues and schedules.

The local bootstrap, the tests and the Terraform variables in infra/ are all generated from this module, so the
wiring cannot drift between environments.
"""

from __future__ import annotations

from dataclasses import dataclass

TOPIC_DEPLOYMENT_REQUESTED = "deployment-requested"
TOPIC_DEPLOYMENT_DELETE_REQUESTED = "deployment-delete-requested"
TOPIC_DEPLOYMENT_EVENTS = "deployment-events"
TOPIC_DEAD_LETTER = "dead-letter"

QUEUE_READINESS = "readiness"
QUEUE_WEBHOOK_DELIVERY = "webhook-delivery"


@dataclass(frozen=True)
class Function:
    """A deployable Cloud Function; ``path`` is where the local functions host serves it."""

    name: str
    target: str
    signature: str  # "http" or "cloudevent"
    public: bool = False

    @property
    def path(self) -> str:
        return f"/{self.name}"


@dataclass(frozen=True)
class PushSubscription:
    name: str
    topic: str
    function: str
    ack_deadline_s: int = 60
    min_backoff_s: int = 1
    max_backoff_s: int = 60
    max_delivery_attempts: int = 10

    @property
    def push_path(self) -> str:
        """Where the local functions host takes this subscription's raw pushes (it turns them into CloudEvents)."""
        return f"/{self.function}/_pubsub/{self.topic}"


@dataclass(frozen=True)
class Queue:
    name: str
    function: str
    max_attempts: int
    min_backoff_s: float
    max_backoff_s: float


@dataclass(frozen=True)
class Schedule:
    name: str
    function: str
    cron: str
    interval_s: int  # the local scheduler loop runs every interval_s (the cron's period)
    path_suffix: str = ""


FUNCTIONS: tuple[Function, ...] = (
    Function("intake", "intake", "http", public=True),
    Function("provision", "provision", "cloudevent"),
    # Runpod workers have no Google identity: the callback authenticates each report by its signature instead.
    Function("callback", "callback", "http", public=True),
    Function("readiness", "readiness", "http"),
    Function("cleanup", "cleanup", "cloudevent"),
    # HTTP, because it takes both the Pub/Sub events (binary CloudEvents, path /) and its own Cloud Tasks (/deliver).
    Function("webhooks", "webhooks", "http"),
)

TOPICS: tuple[str, ...] = (
    TOPIC_DEPLOYMENT_REQUESTED,
    TOPIC_DEPLOYMENT_DELETE_REQUESTED,
    TOPIC_DEPLOYMENT_EVENTS,
    TOPIC_DEAD_LETTER,
)

SUBSCRIPTIONS: tuple[PushSubscription, ...] = (
    PushSubscription("provision-push", TOPIC_DEPLOYMENT_REQUESTED, "provision"),
    # A delete is retried until done: Pub/Sub's longest policy (100 attempts, backoff up to 600 s, about 16 h)
    # before it is dead-lettered; see docs/decisions/2026-11-delete-retried-until-done.md.
    PushSubscription(
        "cleanup-push", TOPIC_DEPLOYMENT_DELETE_REQUESTED, "cleanup", max_backoff_s=600, max_delivery_attempts=100
    ),
    # Lifecycle events become webhook deliveries; their retries are Cloud Tasks (WEBHOOK_RETRY_SCHEDULE_S).
    PushSubscription("webhooks-push", TOPIC_DEPLOYMENT_EVENTS, "webhooks"),
)

QUEUES: tuple[Queue, ...] = (
    Queue(QUEUE_READINESS, "readiness", max_attempts=100, min_backoff_s=1, max_backoff_s=60),
    # The queue's retries cover only our own crashes; a receiver's failures are retried by the delivery step itself,
    # which schedules the next attempt on WEBHOOK_RETRY_SCHEDULE_S (docs/decisions/2026-12-webhook-retries.md).
    Queue(QUEUE_WEBHOOK_DELIVERY, "webhooks", max_attempts=20, min_backoff_s=1, max_backoff_s=60),
)

SCHEDULES: tuple[Schedule, ...] = ()


def function(name: str) -> Function:
    """The declared function called ``name`` (KeyError if there is none)."""
    for candidate in FUNCTIONS:
        if candidate.name == name:
            return candidate
    raise KeyError(name)

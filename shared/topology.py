"""The one declaration of topics, push subscriptions, queues, schedules and what each function may touch.

The local bootstrap, the tests and the Terraform variables in infra/ are all generated from this module, so the
wiring cannot drift between environments. Each function declares the Secret Manager secrets it reads, the topics it
publishes on and the queues it enqueues on; infra/modules/iam grants its service account exactly those (least
privilege; tests/unit/test_infra_least_privilege.py checks the Terraform, tests/unit/test_config.py checks the
secrets against the function's settings class).
"""

from __future__ import annotations

from dataclasses import dataclass

TOPIC_DEPLOYMENT_REQUESTED = "deployment-requested"
TOPIC_DEPLOYMENT_DELETE_REQUESTED = "deployment-delete-requested"
TOPIC_DEPLOYMENT_EVENTS = "deployment-events"
TOPIC_DEAD_LETTER = "dead-letter"

QUEUE_READINESS = "readiness"
QUEUE_WEBHOOK_DELIVERY = "webhook-delivery"
QUEUE_SWEEP = "sweep"
QUEUE_JOB_WATCH = "job-watch"

# Secret Manager secret ids: the settings field of the same name, with dashes (shared.config.secret_id_of).
SECRET_TENANT_PEPPER = "tenant-pepper"
SECRET_METRICS_TOKEN = "metrics-token"
SECRET_SEALING_KEY = "sealing-key"
SECRET_MODEL_CACHE_KEY = "model-cache-aws-secret-access-key"


@dataclass(frozen=True)
class Function:
    """A deployable Cloud Function; ``path`` is where the local functions host serves it.

    ``secrets``, ``publishes`` and ``enqueues`` are everything its service account is granted beyond Firestore and
    log writing: accessor on those secrets, publisher on those topics, enqueuer on those queues; ``signs_tokens``
    lets it sign as itself (the intake's Firebase custom tokens for client apps).
    """

    name: str
    target: str
    signature: str  # "http" or "cloudevent"
    public: bool = False
    secrets: tuple[str, ...] = ()
    publishes: tuple[str, ...] = ()
    enqueues: tuple[str, ...] = ()
    signs_tokens: bool = False
    timeout_s: int = 60  # the request timeout of the deployed function
    # Requests one instance serves at once; functions-framework runs as many threads (THREADS), so a request that
    # waits (a runsync holds its request up to 300 s) never queues the others of its instance.
    concurrency: int = 16

    @property
    def path(self) -> str:
        return f"/{self.name}"

    @property
    def source(self) -> str:
        """Its folder under ``functions/`` (a Python name; the deployed name may hold dashes, which Cloud Run service
        names allow and underscores they do not)."""
        return self.name.replace("-", "_")


@dataclass(frozen=True)
class Secret:
    """A Secret Manager secret some function reads. ``first_version`` is how Terraform makes its first version on a
    new project (``key32``: base64 of 32 random bytes; ``token``: 48 random letters and digits), so the functions
    can start; rotation adds versions out of band. None: the operator adds it, and it is optional."""

    name: str
    first_version: str | None


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
    # A field of shared.config.SchedulerSettings that overrides interval_s in the local scheduler loop.
    interval_setting: str | None = None


# Every transition publishes on deployment-events (shared.deployments.transitions), so every function that moves a
# deployment publishes there.
FUNCTIONS: tuple[Function, ...] = (
    Function(
        "intake",
        "intake",
        "http",
        public=True,
        secrets=(SECRET_TENANT_PEPPER, SECRET_METRICS_TOKEN, SECRET_SEALING_KEY),
        publishes=(TOPIC_DEPLOYMENT_REQUESTED, TOPIC_DEPLOYMENT_DELETE_REQUESTED, TOPIC_DEPLOYMENT_EVENTS),
        # A redelivery asked for through the API, a job webhook of a job its answer saw end, a job's first check,
        # the watchdog of a start.
        enqueues=(QUEUE_WEBHOOK_DELIVERY, QUEUE_JOB_WATCH, QUEUE_READINESS),
        signs_tokens=True,  # POST /v1/client-token
        timeout_s=330,  # a runsync holds its request for up to 300 s (wait=300000), then answers
        concurrency=80,  # SSE streams and runsyncs hold their requests while they wait
    ),
    Function(
        "provision",
        "provision",
        "cloudevent",
        secrets=(SECRET_SEALING_KEY,),
        publishes=(TOPIC_DEPLOYMENT_EVENTS,),
        enqueues=(QUEUE_READINESS,),
    ),
    # Runpod workers have no Google identity: the callback authenticates each report by its signature instead (and
    # Runpod's calls on a job's end by the token in the URL we gave it).
    Function(
        "callback",
        "callback",
        "http",
        public=True,
        secrets=(SECRET_SEALING_KEY, SECRET_MODEL_CACHE_KEY),
        publishes=(TOPIC_DEPLOYMENT_EVENTS,),
        enqueues=(QUEUE_JOB_WATCH,),  # Runpod's call on a job's end asks for a check now
        concurrency=40,  # every worker of every deployment reports here
    ),
    Function(
        "readiness",
        "readiness",
        "http",
        secrets=(SECRET_SEALING_KEY,),
        publishes=(TOPIC_DEPLOYMENT_EVENTS,),
        enqueues=(QUEUE_READINESS,),
    ),
    Function("cleanup", "cleanup", "cloudevent", secrets=(SECRET_SEALING_KEY,), publishes=(TOPIC_DEPLOYMENT_EVENTS,)),
    # HTTP, because it takes both the Pub/Sub events (binary CloudEvents, path /) and its own Cloud Tasks (/deliver).
    Function("webhooks", "webhooks", "http", secrets=(SECRET_SEALING_KEY,), enqueues=(QUEUE_WEBHOOK_DELIVERY,)),
    # The scheduled half of cleanup (Cloud Scheduler, HTTP): finds what is due and fans it out on the sweep queue,
    # whose tasks come back to it one deployment each (docs/decisions/2026-12-sweep.md).
    Function(
        "sweep",
        "sweep",
        "http",
        secrets=(SECRET_SEALING_KEY,),
        publishes=(TOPIC_DEPLOYMENT_DELETE_REQUESTED, TOPIC_DEPLOYMENT_EVENTS),
        enqueues=(QUEUE_SWEEP,),
    ),
    # Follows each inference job its answer did not see end (Cloud Tasks job-watch, polling as scheduled retries):
    # records the end (usage) and sends the job webhook (shared/jobs/watch.py). No transitions, but it publishes
    # a deployment's budget crossings and its budget stop (shared.deployments.budget). The job API is the intake's.
    Function(
        "job-watch",
        "job_watch",
        "http",
        secrets=(SECRET_SEALING_KEY,),
        publishes=(TOPIC_DEPLOYMENT_EVENTS,),
        enqueues=(QUEUE_JOB_WATCH, QUEUE_WEBHOOK_DELIVERY),
    ),
)

SECRETS: tuple[Secret, ...] = (
    Secret(SECRET_TENANT_PEPPER, "token"),
    Secret(SECRET_METRICS_TOKEN, "token"),  # give it to your Prometheus scraper: gcloud secrets versions access
    Secret(SECRET_SEALING_KEY, "key32"),
    Secret(SECRET_MODEL_CACHE_KEY, None),  # only with a shared model cache (MODEL_CACHE_S3_URL)
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
    # One task per deployment the sweep found due; a failed one is retried, and the next run finds it again anyway.
    Queue(QUEUE_SWEEP, "sweep", max_attempts=20, min_backoff_s=2, max_backoff_s=300),
    # A check that crashed is retried by the queue; a job still running is checked again by the step itself
    # (a new named task after the next delay of JOB_WATCH_SCHEDULE_S).
    Queue(QUEUE_JOB_WATCH, "job-watch", max_attempts=20, min_backoff_s=1, max_backoff_s=60),
)

SCHEDULES: tuple[Schedule, ...] = (
    Schedule("sweep", "sweep", "*/5 * * * *", interval_s=300, path_suffix="/run", interval_setting="sweep_interval_s"),
)


def function_url(functions_base_url: str, name: str) -> str:
    """The URL of function ``name``: Cloud Tasks and Cloud Scheduler call it (or a path below it) and sign their
    OIDC tokens for it as the audience, the one a 2nd gen function (a Cloud Run service) accepts."""
    return f"{functions_base_url.rstrip('/')}/{name}"


def function(name: str) -> Function:
    """The declared function called ``name`` (KeyError if there is none)."""
    for candidate in FUNCTIONS:
        if candidate.name == name:
            return candidate
    raise KeyError(name)

"""One settings object per deployable; the only place that reads the environment.

Field names are the environment variable names (case-insensitive), e.g. ``RUNPOD_API_BASE_URL``. :class:`Settings`
holds what every function reads and no secret; each function's class (:data:`SETTINGS_BY_FUNCTION`) adds only the
secrets that function uses: ``SEALING_KEY`` (every function), ``TENANT_PEPPER`` and ``METRICS_TOKEN`` (intake),
``MODEL_CACHE_AWS_SECRET_ACCESS_KEY`` (callback). Those come from Secret Manager when ``SECRET_MANAGER_PROJECT`` is
set, otherwise from the environment (the local stack writes them to ``.local/stack.env``); a function never asks
Secret Manager for a secret it does not declare, so its service account is granted only its own (infra/modules/iam,
from the ``secrets`` of its entry in :mod:`shared.topology`; tests/unit/test_config.py checks the two agree).
Validation errors never quote the input: it holds the secrets.
"""

from __future__ import annotations

import base64
import re
from functools import lru_cache
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

# Every field that is a Secret Manager secret (named like the field, with dashes) in some function's settings.
SECRET_FIELDS = ("tenant_pepper", "metrics_token", "sealing_key", "model_cache_aws_secret_access_key")
_PINNED_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$")


class SecretManagerSource(PydanticBaseSettingsSource):
    """Reads the secret fields the settings class declares from Google Secret Manager (the latest version of a
    secret named like the field, with dashes); never one the class does not declare."""

    def __init__(self, settings_cls: type[BaseSettings], project: str | None) -> None:
        super().__init__(settings_cls)
        self._project = project

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if not self._project:
            return {}
        from google.api_core.exceptions import NotFound
        from google.cloud import secretmanager  # imported only where Secret Manager is used

        client = secretmanager.SecretManagerServiceClient()
        values: dict[str, Any] = {}
        for name in secret_fields(self.settings_cls):
            secret_id = secret_id_of(name)
            path = f"projects/{self._project}/secrets/{secret_id}/versions/latest"
            try:
                values[name] = client.access_secret_version(name=path).payload.data.decode()
            except NotFound:
                if self.settings_cls.model_fields[name].is_required():
                    raise
                # An optional secret (the shared cache's key) that this project does not use.
        return values


def secret_fields(settings_cls: type[BaseSettings]) -> tuple[str, ...]:
    """The Secret Manager fields ``settings_cls`` declares, in :data:`SECRET_FIELDS` order."""
    return tuple(name for name in SECRET_FIELDS if name in settings_cls.model_fields)


def delays_s(schedule: str) -> list[float]:
    """The delays of a comma-separated schedule setting (``WEBHOOK_RETRY_SCHEDULE_S``, ``JOB_WATCH_SCHEDULE_S``)."""
    return [float(part) for part in schedule.split(",") if part.strip()]


def secret_id_of(field_name: str) -> str:
    """The Secret Manager secret id of a secret field (``sealing_key`` → ``sealing-key``)."""
    return field_name.replace("_", "-")


class Settings(BaseSettings):
    """What every function reads; no secrets (each function's subclass below adds its own)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", hide_input_in_errors=True)

    # Where we run
    google_cloud_project: str = "visgate-local"
    region: str = "us-central1"
    secret_manager_project: str | None = None
    # Emulators: the Google clients read FIRESTORE_EMULATOR_HOST / PUBSUB_EMULATOR_HOST themselves; Cloud Tasks
    # has no such convention, so its emulator address is ours.
    cloud_tasks_emulator_host: str | None = None

    # URLs
    functions_base_url: str = Field(
        "http://127.0.0.1:8080", description="base URL of the functions (push/task targets)"
    )
    public_api_base_url: str = Field("http://127.0.0.1:8080/intake", description="base URL users call")
    tasks_service_account_email: str | None = None

    # Intake API
    rate_limit_per_minute: int = 120
    invoke_key_rate_limit_per_minute: int = Field(
        300, ge=1, description="requests one invoke key may make in a minute (its own window, apart from the tenant's)"
    )
    max_live_deployments_per_tenant: int = Field(
        20, ge=1, description="deployments one tenant may have that are neither failed nor deleted"
    )
    max_workers_min_per_tenant: int = Field(
        10, ge=0, description="the sum of workers_min over one tenant's live deployments (always-on workers)"
    )
    key_reverify_sensitive_s: float = Field(
        300.0,
        ge=0,
        description="a Runpod key whose verdict is older than this is checked with Runpod again before a sensitive "
        "step (webhook secret rotation, invoke keys, client tokens, creates)",
    )
    allow_http_loopback_webhooks: bool = False
    max_body_bytes: int = 64 * 1024
    event_log_max_lines: int = 200
    max_event_age_s: int = 3600
    key_verdict_ttl_s: float = Field(3600.0, description="how long Runpod's acceptance of a key is remembered")
    key_refusal_ttl_s: float = Field(60.0, description="how long Runpod's refusal of a key is remembered")
    refused_keys_per_address_per_minute: int = Field(10, ge=1, description="refused keys one client address may send")
    # Inference jobs through the API (shared.jobs.routes)
    job_record_ttl_days: float = Field(7.0, gt=0, description="how long job records are kept (a Firestore TTL)")
    max_invoke_keys_per_deployment: int = Field(20, ge=1, description="live invoke keys one deployment may have")
    job_watch_schedule_s: str = Field(
        "1,2,3,5,8,13,20,30,60",
        pattern=r"^\s*\d+(\.\d+)?(\s*,\s*\d+(\.\d+)?)*\s*$",
        description="delays between the checks of a job that did not end in its answer (the last one repeats)",
    )
    job_watch_max_s: float = Field(
        25 * 3600, gt=0, description="how long after its submission a job is followed (Runpod keeps a queued job 24 h)"
    )
    job_webhook_max_bytes: int = Field(
        256 * 1024, ge=1024, le=512 * 1024, description="the largest job webhook body; above it, output is left out"
    )

    # Telling the user: webhooks (the webhooks function) and client tokens (the intake)
    webhook_timeout_s: float = Field(10.0, gt=0, le=30, description="per-attempt timeout of a webhook POST")
    webhook_retry_schedule_s: str = Field(
        "10,30,60,120,300,600,900,1500",
        pattern=r"^\s*\d+(\.\d+)?(\s*,\s*\d+(\.\d+)?)*\s*$",
        description="delays before each retry of a failed webhook delivery (9 attempts over about an hour)",
    )
    webhook_secret_overlap_s: float = Field(24 * 3600, ge=0, description="how long a rotated-out secret still signs")
    client_token_service_account_email: str | None = None

    # Providers
    runpod_api_base_url: str = "https://api.runpod.io"
    runpod_endpoint_base_url: str = "https://api.runpod.ai"
    hf_endpoint: str = "https://huggingface.co"
    runpod_timeout_s: float = 20.0
    hf_timeout_s: float = 20.0

    # Provisioning (provision, callback, readiness, cleanup)
    worker_image: str = Field(
        # Pinned by digest so that every deployment of one release runs the same bytes; CI rewrites it per release.
        "ghcr.io/visgate/diffusers-worker@sha256:" + "0" * 64,
        description="the worker image, as <repository>@sha256:<digest>",
    )
    worker_dtype: Literal["float16", "bfloat16", "float32"] | None = Field(
        None,
        description="sent to workers as WORKER_DTYPE only when set; unset, each worker loads the model's own "
        "preference (bfloat16 for FLUX/Sana-type models, else float16) and the VRAM estimate follows it",
    )
    # The ceiling is SigV4's: a presigned URL lives at most 7 days.
    output_url_expiry_s: int = Field(
        7 * 24 * 3600,
        ge=1,
        le=7 * 24 * 3600,
        description="sent to the workers of deployments with an output_s3_url as OUTPUT_URL_EXPIRY_S: the lifetime "
        "of the presigned GET URLs of their uploaded images",
    )
    worker_container_disk_gb: int = 40
    worker_execution_timeout_s: int = 600
    endpoint_flashboot: bool = True
    endpoint_scaler_type: Literal["QUEUE_DELAY", "REQUEST_COUNT"] = "QUEUE_DELAY"
    endpoint_scaler_value: int = 4
    max_gpu_candidates: int = 3
    gpu_catalog_cache_s: float = Field(60.0, description="how long an instance reuses Runpod's GPU catalog")
    readiness_deadline_s: float = 15 * 60
    readiness_first_check_s: float = 20.0
    readiness_backoff_factor: float = 1.5
    readiness_max_interval_s: float = 60.0
    throttled_switch_after_s: float = 90.0
    callback_tolerance_s: int = 300
    # Cost control (the sweep: shared.deployments.sweep)
    ttl_min_minutes: int = Field(10, ge=1, description="the least ttl_minutes and idle_delete_minutes accepted")
    deleting_deadline_s: float = Field(30 * 60, description="a delete not done within this is retried by the sweep")
    sweep_batch_size: int = Field(500, ge=1, description="documents per query page of one sweep run")
    # The platform's shared model cache: provisioning grants it to deployments of allowlisted models; the callback
    # function reads manifests and presigns objects for granted workers, with keys only it holds (CallbackSettings).
    model_cache_s3_url: str | None = None
    model_cache_aws_endpoint_url: str | None = None
    model_cache_aws_region: str | None = None
    model_cache_shared_allowlist: str = ""
    cache_grant_ttl_s: int = Field(3600, ge=60, le=7 * 24 * 3600, description="lifetime of presigned cache URLs")

    @field_validator("worker_image")
    @classmethod
    def _image_pinned(cls, value: str) -> str:
        if not _PINNED_IMAGE.fullmatch(value):
            raise ValueError("WORKER_IMAGE must be pinned by digest: <repository>@sha256:<64 hex>")
        return value

    @field_validator(*SECRET_FIELDS, mode="before", check_fields=False)  # each subclass has some of them
    @classmethod
    def _strip_secret(cls, value: Any) -> Any:
        # `echo ... | gcloud secrets create --data-file=-` stores a trailing newline, and so do most .env editors.
        return value.strip() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        project = env_settings().get("secret_manager_project")
        return (init_settings, SecretManagerSource(settings_cls, project), env_settings, file_secret_settings)


class SchedulerSettings(BaseSettings):
    """The local stand-in for Cloud Scheduler (local/scheduler.py): its interval per schedule, by setting name."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    sweep_interval_s: int = Field(60, gt=0, description="how often the local scheduler loop runs the sweep")


class SealingSettings(Settings):
    """Settings of a function that seals or opens deployment credentials (every function does)."""

    sealing_key: SecretStr = Field(..., description="base64 of a 32-byte AES-GCM key for sealed credentials")

    @field_validator("sealing_key")
    @classmethod
    def _sealing_key_is_32_bytes(cls, value: SecretStr) -> SecretStr:
        try:
            raw = base64.b64decode(value.get_secret_value(), validate=True)
        except ValueError as exc:
            raise ValueError("SEALING_KEY must be base64") from exc
        if len(raw) != 32:
            raise ValueError("SEALING_KEY must decode to 32 bytes")
        return value


class IntakeSettings(SealingSettings):
    """The intake function: it turns API keys into tenant ids and seals the credentials of new deployments."""

    tenant_pepper: SecretStr = Field(..., description="HMAC key that turns an API key into a tenant id")
    metrics_token: SecretStr | None = Field(
        None, description="the bearer token GET /metrics requires; unset, /metrics answers 401 to everyone"
    )


class BackgroundSettings(SealingSettings):
    """The functions that run in the background, on events and tasks (provision, readiness, cleanup, webhooks, sweep,
    job-watch): they open sealed credentials (or sealed webhook secrets), nothing more secret."""


class CallbackSettings(SealingSettings):
    """The callback function: it checks the workers' signatures and holds the shared model cache's read-only keys
    (it alone presigns the cache's objects for granted workers)."""

    model_cache_aws_access_key_id: SecretStr | None = None
    model_cache_aws_secret_access_key: SecretStr | None = None


# Each function's settings class; its secret fields are exactly the ``secrets`` of its shared.topology entry.
SETTINGS_BY_FUNCTION: dict[str, type[SealingSettings]] = {
    "intake": IntakeSettings,
    "provision": BackgroundSettings,
    "callback": CallbackSettings,
    "readiness": BackgroundSettings,
    "cleanup": BackgroundSettings,
    "webhooks": BackgroundSettings,  # it opens the tenants' sealed webhook secrets
    "sweep": BackgroundSettings,  # it opens the tenants' credentials to find orphaned endpoints
    "job-watch": BackgroundSettings,  # it opens the deployments' Runpod keys to follow their jobs
}
ALL_SETTINGS: tuple[type[BaseSettings], ...] = (
    Settings,
    IntakeSettings,
    BackgroundSettings,
    CallbackSettings,
    SchedulerSettings,
)

_S = TypeVar("_S", bound=Settings)


@lru_cache
def get_settings(settings_cls: type[_S]) -> _S:
    """The settings of this instance, built once (cold start): ``get_settings(IntakeSettings)`` in the intake
    function, and so on (:data:`SETTINGS_BY_FUNCTION`)."""
    return settings_cls()  # type: ignore[call-arg]  # required fields come from the environment

"""One settings object for every deployable; the only place that reads the environment.

Field names are the environment variable names (case-insensitive), e.g. ``RUNPOD_API_BASE_URL``. Secrets
(``TENANT_PEPPER``, ``SEALING_KEY``, ``MODEL_CACHE_AWS_SECRET_ACCESS_KEY``) come from Secret Manager when
``SECRET_MANAGER_PROJECT`` is set, otherwise from the environment (the local stack writes them to
``.local/stack.env``). Validation errors never quote the input: it holds the secrets.
"""

from __future__ import annotations

import base64
import re
from functools import lru_cache
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

SECRET_FIELDS = ("tenant_pepper", "sealing_key", "model_cache_aws_secret_access_key")
_PINNED_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$")


class SecretManagerSource(PydanticBaseSettingsSource):
    """Reads the secret fields from Google Secret Manager (latest version of a secret named like the field)."""

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
        for name in SECRET_FIELDS:
            secret_id = name.replace("_", "-")
            path = f"projects/{self._project}/secrets/{secret_id}/versions/latest"
            try:
                values[name] = client.access_secret_version(name=path).payload.data.decode()
            except NotFound:
                if self.settings_cls.model_fields[name].is_required():
                    raise
                # An optional secret (the shared cache's key) that this project does not use.
        return values


class Settings(BaseSettings):
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

    # Secrets
    tenant_pepper: SecretStr = Field(..., description="HMAC key that turns an API key into a tenant id")
    sealing_key: SecretStr = Field(..., description="base64 of a 32-byte AES-GCM key for sealed credentials")

    # Intake API
    rate_limit_per_minute: int = 120
    allow_http_loopback_webhooks: bool = False
    max_body_bytes: int = 64 * 1024
    event_log_max_lines: int = 200
    max_event_age_s: int = 3600
    key_verdict_ttl_s: float = Field(3600.0, description="how long Runpod's acceptance of a key is remembered")
    key_refusal_ttl_s: float = Field(60.0, description="how long Runpod's refusal of a key is remembered")
    refused_keys_per_address_per_minute: int = Field(10, ge=1, description="refused keys one client address may send")
    # Inference jobs through the API (shared.intake.jobs)
    job_record_ttl_days: float = Field(7.0, gt=0, description="how long job records are kept (a Firestore TTL)")
    max_invoke_keys_per_deployment: int = Field(20, ge=1, description="live invoke keys one deployment may have")

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
    # The platform's shared model cache. Its (read-only) keys stay here: the callback function reads manifests and
    # presigns objects for granted workers; provisioning grants it to deployments of allowlisted models.
    model_cache_s3_url: str | None = None
    model_cache_aws_endpoint_url: str | None = None
    model_cache_aws_region: str | None = None
    model_cache_shared_allowlist: str = ""
    model_cache_aws_access_key_id: SecretStr | None = None
    model_cache_aws_secret_access_key: SecretStr | None = None
    cache_grant_ttl_s: int = Field(3600, ge=60, le=7 * 24 * 3600, description="lifetime of presigned cache URLs")

    @field_validator("worker_image")
    @classmethod
    def _image_pinned(cls, value: str) -> str:
        if not _PINNED_IMAGE.match(value):
            raise ValueError("WORKER_IMAGE must be pinned by digest: <repository>@sha256:<64 hex>")
        return value

    @field_validator(*SECRET_FIELDS, mode="before")
    @classmethod
    def _strip_secret(cls, value: Any) -> Any:
        # `echo ... | gcloud secrets create --data-file=-` stores a trailing newline, and so do most .env editors.
        return value.strip() if isinstance(value, str) else value

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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this instance, built once (cold start)."""
    return Settings()  # type: ignore[call-arg]  # required fields come from the environment

"""The worker's one settings object: the only module of the worker that reads the environment.

Field names are the environment variable names of docs/contracts.md ("Worker environment"), case-insensitive.
Provisioning sets them as the ``env`` of the endpoint it creates (Runpod REST v2 ``POST /v2/serverless``, the
container given inline); tests and the local stack set them directly. Variables the runpod SDK reads itself
(``RUNPOD_WEBHOOK_GET_JOB``, ``RUNPOD_AI_API_KEY``, ...) are not repeated here.
"""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.hub_rules import DtypeName
from shared.job_input import Task
from shared.patterns import WholeMatch

CacheScope = Literal["off", "shared", "private"]
Device = Literal["cuda", "cpu"]
# SigV4's ceiling: a presigned URL lives at most 7 days.
PRESIGNED_URL_MAX_S = 7 * 24 * 3600


class LoraSetting(BaseModel):
    """One item of ``WORKER_LORAS`` (provisioning's ``shared.model_tasks.ResolvedLora``): a commit-pinned adapter."""

    model_config = ConfigDict(extra="forbid", regex_engine="python-re")

    # WholeMatch: re.fullmatch (Python's engine, for the look-ahead, lets "$" match before a final newline).
    hf_model_id: Annotated[str, WholeMatch(r"^[\w.-]+/[\w.-]+$")]
    revision: Annotated[str, WholeMatch(r"^[0-9a-f]{40}$")]
    weight_name: Annotated[str, WholeMatch(r"^(?!.*\.\.)[\w./-]+\.safetensors$")]
    scale: float = Field(default=1.0, ge=-4, le=4)


class ReportSettings(BaseSettings):
    """Who the worker is and where it reports: read on its own too, so that a worker whose other settings are
    invalid can still report ``failed``."""

    # The input of a validation error is the whole environment (HF_TOKEN, the callback secret, S3 keys).
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", hide_input_in_errors=True)

    visgate_deployment_id: str = Field(default="local", description="deployment id, on every log line and report")
    visgate_callback_url: str | None = Field(default=None, description="phase reports go here; unset: logged only")
    visgate_callback_secret: SecretStr | None = Field(default=None, description="whsec_... secret that signs reports")
    worker_log_level: str = "INFO"

    @field_validator("visgate_callback_url")
    @classmethod
    def _strip_callback_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value


class WorkerSettings(ReportSettings):
    """Everything the worker is configured with, validated once at start-up."""

    # The model
    hf_model_id: str = Field(..., pattern=r"^[\w.-]+/[\w.-]+$", description="Hub repo id, org/name")
    hf_model_revision: str = Field(..., pattern=r"^[0-9a-f]{40}$", description="pinned 40-hex commit sha")
    hf_token: SecretStr | None = None
    hf_endpoint: str = "https://huggingface.co"

    # The model cache: the S3 location and keys are the user's own, for `private` only
    model_cache_scope: CacheScope = "off"
    model_cache_s3_url: str | None = Field(default=None, pattern=r"^s3://[^/]+(/.*)?$")
    model_cache_aws_access_key_id: SecretStr | None = None
    model_cache_aws_secret_access_key: SecretStr | None = None
    model_cache_aws_endpoint_url: str | None = None
    model_cache_aws_region: str | None = None
    # The shared scope asks the callback function for a grant here (signed like the phase reports).
    visgate_cache_grant_url: str | None = None

    # Download tuning: concurrency x part size bounds the bytes in flight, not the file sizes.
    worker_download_concurrency: int = Field(default=16, ge=1, le=128)
    worker_download_part_mb: int = Field(default=32, ge=5, le=512)

    # What the deployment serves: its task and the LoRA adapters fused into the model (JSON list).
    worker_task: Task = "text_to_image"
    worker_loras: list[LoraSetting] = Field(default_factory=list, max_length=4)

    # Speed on CUDA (each ignored on CPU; the effective choices are reported with `ready`).
    worker_channels_last: bool = Field(default=True, description="channels_last memory format for denoiser and VAE")
    worker_sdpa: bool = Field(default=True, description="PyTorch scaled-dot-product attention in UNet/VAE blocks")
    worker_compile: bool = Field(default=False, description="torch.compile the denoiser (compile time in load_s)")
    worker_compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    worker_vae_tiling_above_pixels: int = Field(
        default=1024 * 1024, ge=0, description="tiled VAE decode for requests larger than this many pixels; 0: never"
    )

    # Job images fetched from URLs: loopback addresses are refused unless this is set (tests only).
    worker_image_fetch_allow_loopback: bool = False

    # Runtime
    worker_device: Device | None = None
    worker_dtype: DtypeName | None = None
    worker_model_dir: Path = Field(default_factory=lambda: Path(tempfile.gettempdir()) / "visgate-models")
    # Set by Runpod on each worker: the GPU type it was placed on (reported with `ready`).
    runpod_gpu_name: str | None = None
    # The runpod SDK's own logger prints whole job outputs (base64 images) at DEBUG, its default: keep it at INFO.
    runpod_log_level: Literal["DEBUG", "INFO", "WARN", "ERROR"] = "INFO"

    # Output bucket, Runpod's convention (a job's own s3Config wins over it).
    bucket_endpoint_url: str | None = None
    bucket_access_key_id: SecretStr | None = None
    bucket_secret_access_key: SecretStr | None = None
    bucket_name: str | None = Field(default=None, description="output bucket; default as the runpod SDK: %m-%y")
    bucket_region: str | None = Field(default=None, description="signing region; default: from the endpoint URL")
    # Provisioning sends the key prefix of the deployment's output_s3_url, whose bucket each job through the API
    # names in s3Config (which has no prefix field). Normalised there, so a slash at either end is refused here.
    output_s3_prefix: str = Field(
        default="", pattern=r"^([^/](.*[^/])?)?$", description="key prefix of uploads to a job's s3Config bucket"
    )
    output_url_expiry_s: int = Field(
        default=PRESIGNED_URL_MAX_S, ge=1, le=PRESIGNED_URL_MAX_S, description="lifetime of presigned output URLs"
    )

    @field_validator("hf_endpoint", "model_cache_aws_endpoint_url", "bucket_endpoint_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @property
    def download_part_size(self) -> int:
        """Ranged-download part size in bytes."""
        return self.worker_download_part_mb * 1024 * 1024

    @property
    def output_bucket_configured(self) -> bool:
        """Whether the BUCKET_* env names an output bucket."""
        return bool(self.bucket_endpoint_url and self.bucket_access_key_id and self.bucket_secret_access_key)


@lru_cache(maxsize=1)
def get_settings() -> WorkerSettings:
    """The settings of this process, read from the environment once.

    Raises:
        pydantic.ValidationError: a variable is missing or malformed.
    """
    return WorkerSettings()  # type: ignore[call-arg]  # required fields come from the environment


def get_report_settings() -> ReportSettings:
    """Only the identity and callback settings (for reporting a configuration failure)."""
    return ReportSettings()

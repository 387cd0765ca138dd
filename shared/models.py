"""The deployment: what a client sends, what is stored, and what a client may read.

Validation is strict (unknown fields, wrong types and out-of-range values are refused, never coerced), because
a deployment that silently differs from what was asked costs GPU money.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from shared.gpu import GpuTier
from shared.lifecycle import Status

_REPO_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$")
_S3_URL = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$")
_BLOCKED_HOSTS = frozenset({"localhost", "metadata", "metadata.google.internal", "metadata.goog"})
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class CacheScope(StrEnum):
    OFF = "off"
    SHARED = "shared"
    PRIVATE = "private"


def validate_hf_model_id(value: str) -> str:
    """Hub repo id syntax: ``name`` or ``org/name``; see the Hub's own rules."""
    parts = value.split("/")
    if len(parts) > 2 or not all(_REPO_PART.match(part) for part in parts):
        raise ValueError(
            "must be 'name' or 'org/name': letters, digits, '-', '_', '.'; at most 96 characters per part; "
            "not starting or ending with '-' or '.'"
        )
    if any(".." in part or "--" in part for part in parts):
        raise ValueError("must not contain '..' or '--'")
    return value


def check_public_url(value: str, *, allow_http_loopback: bool, field: str) -> str:
    """Refuse URLs that would make us call into private networks (SSRF): loopback, private, link-local, metadata."""
    parts = urlsplit(value)
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError(f"{field} must be an absolute URL")
    if parts.username or parts.password:
        raise ValueError(f"{field} must not contain credentials")
    if allow_http_loopback and host in _LOOPBACK_HOSTS and parts.scheme in ("http", "https"):
        return value
    if parts.scheme != "https":
        raise ValueError(f"{field} must use https")
    if host in _BLOCKED_HOSTS or host.endswith((".localhost", ".internal")):
        raise ValueError(f"{field} must not point at a loopback, private or metadata address")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return value  # a DNS name: its addresses are checked again at delivery time
    if not address.is_global:
        raise ValueError(f"{field} must not point at a loopback, private, link-local or metadata address")
    return value


class CreateDeploymentRequest(BaseModel):
    """Body of ``POST /v1/deployments``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    hf_model_id: Annotated[str, Field(min_length=1, max_length=193, examples=["stabilityai/sd-turbo"])]
    revision: Annotated[str, Field(min_length=1, max_length=255)] = "main"
    gpu_tier: GpuTier | None = None
    hf_token: SecretStr | None = Field(default=None, max_length=512)
    user_webhook_url: Annotated[str, Field(max_length=2048)] | None = None
    cache_scope: CacheScope = CacheScope.OFF
    user_s3_url: Annotated[str, Field(max_length=1024)] | None = None
    user_aws_access_key_id: SecretStr | None = Field(default=None, max_length=256)
    user_aws_secret_access_key: SecretStr | None = Field(default=None, max_length=256)
    user_aws_endpoint_url: Annotated[str, Field(max_length=2048)] | None = None
    user_aws_region: Annotated[str, Field(pattern=r"^[a-z0-9-]{2,32}$")] | None = None
    workers_min: Annotated[int, Field(ge=0, le=10)] = 0
    workers_max: Annotated[int, Field(ge=1, le=10)] = 1
    idle_timeout_seconds: Annotated[int, Field(ge=5, le=3600)] = 120
    ttl_minutes: Annotated[int, Field(ge=10, le=10080)] | None = None

    @field_validator("hf_model_id")
    @classmethod
    def _hub_id(cls, value: str) -> str:
        return validate_hf_model_id(value)

    @field_validator("revision")
    @classmethod
    def _revision(cls, value: str) -> str:
        if not _REVISION.match(value) or ".." in value:
            raise ValueError("must be a branch, tag or commit sha (letters, digits, '.', '_', '-', '/'; no '..')")
        return value

    @field_validator("user_webhook_url", "user_aws_endpoint_url")
    @classmethod
    def _public_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        allow = bool((info.context or {}).get("allow_http_loopback", False))
        return check_public_url(value, allow_http_loopback=allow, field=str(info.field_name))

    @field_validator("user_s3_url")
    @classmethod
    def _s3_url(cls, value: str | None) -> str | None:
        if value is not None and not _S3_URL.match(value):
            raise ValueError("must look like s3://bucket/optional/prefix")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CreateDeploymentRequest:
        if self.workers_min > self.workers_max:
            raise ValueError("workers_min must not exceed workers_max")
        private_fields = ("user_s3_url", "user_aws_access_key_id", "user_aws_secret_access_key")
        if self.cache_scope is CacheScope.PRIVATE:
            missing = [name for name in private_fields if getattr(self, name) is None]
            if missing:
                raise ValueError(f"cache_scope 'private' requires {', '.join(missing)}")
        else:
            given = [
                name for name in (*private_fields, "user_aws_endpoint_url", "user_aws_region") if getattr(self, name)
            ]
            if given:
                raise ValueError(f"{', '.join(given)} only apply to cache_scope 'private'")
        return self


class SealedCredentials(BaseModel):
    """What is sealed per deployment; never stored or sent in the clear."""

    runpod_api_key: str
    hf_token: str | None = None
    user_aws_access_key_id: str | None = None
    user_aws_secret_access_key: str | None = None


class ErrorInfo(BaseModel):
    code: str
    message: str


class Progress(BaseModel):
    bytes_done: int = 0
    bytes_total: int | None = None


class Timings(BaseModel):
    download_s: float | None = None
    load_s: float | None = None
    warmup_s: float | None = None
    loaded_from_cache: bool | None = None


class DeploymentView(BaseModel):
    """The public view of a deployment: what ``GET /v1/deployments/{id}`` returns. No secrets, ever."""

    deployment_id: str
    status: Status
    hf_model_id: str
    revision: str
    model_commit_sha: str | None = None
    gpu_tier: GpuTier | None = None
    cache_scope: CacheScope
    workers_min: int
    workers_max: int
    idle_timeout_seconds: int
    ttl_minutes: int | None = None
    user_webhook_url: str | None = None
    vram_estimate_gb: float | None = None
    gpu_candidates: list[str] = Field(default_factory=list)
    gpu_pool: str | None = None
    endpoint_id: str | None = None
    endpoint_url: str | None = None
    progress: Progress | None = None
    timings: Timings | None = None
    error: ErrorInfo | None = None
    phase_timestamps: dict[str, datetime] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None


class CreateDeploymentResponse(BaseModel):
    deployment_id: str
    status: Literal["validating"] = "validating"
    status_url: str
    stream_url: str
    created_at: datetime


class DeleteDeploymentResponse(BaseModel):
    deployment_id: str
    status: Literal["deleting", "deleted"]


class DeploymentList(BaseModel):
    deployments: list[DeploymentView]
    next_page_token: str | None = None
    counts_by_status: dict[str, int]


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None
    request_id: str


class ErrorResponse(BaseModel):
    error: ErrorBody

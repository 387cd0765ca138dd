"""What a deployment's Runpod endpoint is made of, as pure functions: the worker's environment and the v2 create
body. Secrets appear only here, on their way into the user's own Runpod account (docs/contracts.md)."""

from __future__ import annotations

from shared.config import Settings
from shared.document import Deployment
from shared.model_tasks import loras_env
from shared.models import CacheScope, SealedCredentials
from shared.public_urls import split_s3_url
from shared.runpod.client import (
    EndpointSpec,
    GpuSelection,
    QueueDelayScaling,
    RequestCountScaling,
    WorkerLimits,
)
from shared.topology import function


def resource_name(deployment_id: str) -> str:
    """The Runpod endpoint name of a deployment: deterministic, so a retry finds what an earlier attempt created."""
    return f"visgate-{deployment_id}"


def is_resource_of(name: str, deployment_id: str) -> bool:
    """Whether a Runpod endpoint name is this deployment's (Runpod marks FlashBoot endpoints with a ``-fb`` suffix)."""
    ours = resource_name(deployment_id)
    return name in (ours, f"{ours}-fb")


def callback_url(settings: Settings, deployment_id: str, route: str = "phase") -> str:
    """The callback function's URL for one deployment: ``phase`` reports, ``cache-grant`` requests, or Runpod's
    ``job-ended`` calls."""
    base = f"{settings.functions_base_url.rstrip('/')}{function('callback').path}"
    return f"{base}/v1/deployments/{deployment_id}/{route}"


def worker_env(
    settings: Settings, doc: Deployment, credentials: SealedCredentials, callback_secret: str
) -> dict[str, str]:
    """The worker's environment (docs/contracts.md): what to load, where to report, which cache to read, how to
    name and presign uploads to the output bucket."""
    assert doc.model_commit_sha, "the model check pins the commit before an endpoint is made"
    env = {
        "VISGATE_DEPLOYMENT_ID": doc.deployment_id,
        "VISGATE_CALLBACK_URL": callback_url(settings, doc.deployment_id),
        "VISGATE_CALLBACK_SECRET": callback_secret,
        "HF_MODEL_ID": doc.hf_model_id,
        "HF_MODEL_REVISION": doc.model_commit_sha,
        "HF_ENDPOINT": settings.hf_endpoint,
        **_cache_env(settings, doc, credentials),
        "WORKER_TASK": doc.task,
    }
    if doc.resolved_loras:
        env["WORKER_LORAS"] = loras_env(doc.resolved_loras)
    if settings.worker_dtype:
        # Only an explicit override: unset, the worker picks the model's own dtype (shared.hub_rules.target_dtype),
        # which is also the one the VRAM estimate assumed.
        env["WORKER_DTYPE"] = settings.worker_dtype
    if credentials.hf_token:
        env["HF_TOKEN"] = credentials.hf_token
    if doc.output_s3_url:
        env |= _output_env(settings, doc.output_s3_url)
    return env


def _output_env(settings: Settings, output_s3_url: str) -> dict[str, str]:
    """The output-bucket part of the worker env. Each job through the API names the bucket in Runpod's
    ``s3Config`` (shared.jobs.routes), which has no key prefix field, so the URL's prefix comes to the worker here."""
    env = {"OUTPUT_URL_EXPIRY_S": str(settings.output_url_expiry_s)}
    prefix = split_s3_url(output_s3_url)[1]
    if prefix:
        env["OUTPUT_S3_PREFIX"] = prefix
    return env


def _cache_env(settings: Settings, doc: Deployment, credentials: SealedCredentials) -> dict[str, str]:
    """The cache part of the worker env. The endpoint lives in the user's Runpod account, so it carries the user's
    own keys (``private``) and never the platform's: a ``shared`` worker asks the callback function for a grant."""
    values: dict[str, str | None]
    if doc.cache_scope is CacheScope.PRIVATE:
        values = {
            "MODEL_CACHE_SCOPE": doc.cache_scope.value,
            "MODEL_CACHE_S3_URL": doc.user_s3_url,
            "MODEL_CACHE_AWS_ACCESS_KEY_ID": credentials.user_aws_access_key_id,
            "MODEL_CACHE_AWS_SECRET_ACCESS_KEY": credentials.user_aws_secret_access_key,
            "MODEL_CACHE_AWS_ENDPOINT_URL": doc.user_aws_endpoint_url,
            "MODEL_CACHE_AWS_REGION": doc.user_aws_region,
        }
    elif doc.cache_scope is CacheScope.SHARED and doc.shared_cache_granted:
        values = {
            "MODEL_CACHE_SCOPE": doc.cache_scope.value,
            "VISGATE_CACHE_GRANT_URL": callback_url(settings, doc.deployment_id, "cache-grant"),
        }
    else:
        # Not granted (a model off the allowlist): the worker goes to the Hub without asking.
        values = {"MODEL_CACHE_SCOPE": CacheScope.OFF.value}
    return {key: value for key, value in values.items() if value}


def endpoint_spec(settings: Settings, doc: Deployment, env: dict[str, str], pools: list[str]) -> EndpointSpec:
    """``POST /v2/serverless``: a queue-based endpoint with the container inline, on ``pools`` in priority order."""
    scaling: QueueDelayScaling | RequestCountScaling
    if settings.endpoint_scaler_type == "QUEUE_DELAY":
        scaling = QueueDelayScaling(queueDelay=settings.endpoint_scaler_value)
    else:
        scaling = RequestCountScaling(requestCount=settings.endpoint_scaler_value)
    return EndpointSpec(
        name=resource_name(doc.deployment_id),
        image=settings.worker_image,
        env=env,
        disk=settings.worker_container_disk_gb,
        gpu=GpuSelection(pools=pools),
        workers=WorkerLimits(
            min=doc.workers_min,
            max=doc.workers_max,
            # v2 refuses idleTimeout with request-count scaling on a queue endpoint.
            idleTimeout=doc.idle_timeout_seconds if settings.endpoint_scaler_type == "QUEUE_DELAY" else None,
        ),
        scaling=scaling,
        flashboot="FLASHBOOT" if settings.endpoint_flashboot else "OFF",
        timeout=settings.worker_execution_timeout_s * 1000,
    )

"""provision: ``validating → selecting_gpu → creating_endpoint``, then a warm-up job and the readiness watchdog.

At-least-once delivery is the norm, so every stage starts from what the document says:

- a stage already passed is not repeated (the model check and the GPU choice are recorded with their transition);
- each Runpod id is recorded before the next step, and a create whose name exists already adopts the existing
  resource (an earlier attempt created it and crashed before recording it); an attempt that begins where a
  previous one was creating looks the resource up by name first, because real Runpod does not refuse every
  duplicate name;
- for the same reason two concurrent attempts may each create an endpoint: the endpoint id is recorded only while
  none is, and the attempt that loses removes its own endpoint and goes on with the recorded one;
- the readiness watchdog is scheduled before the warm-up job (and again by any later delivery while the worker is
  reporting), so it cannot be lost between a worker's first report and the end of this attempt;
- when the deployment was deleted meanwhile, nothing is created, and what this attempt created is torn down again.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from shared import model_tasks
from shared.config import Settings
from shared.errors import IllegalTransitionError, PermanentError
from shared.gpu import GpuTier, rank_pools
from shared.lifecycle import FailureReason, Status
from shared.messages import DeploymentRequested, ReadinessCheck
from shared.models import CacheScope, SealedCredentials
from shared.runpod.client import Endpoint, EndpointSpec, RunpodClient, TemplateSpec
from shared.runpod.errors import RunpodNameTakenError, RunpodNotFoundError
from shared.steps.deps import StepDeps, is_resource_of, resource_name
from shared.steps.teardown import may_exist_on_runpod, open_credentials, release, remove_endpoint
from shared.topology import QUEUE_READINESS, function

logger = logging.getLogger(__name__)

# Statuses in which the Runpod resources exist and may still be recorded (the worker may report before we finish).
_RECORDABLE = {Status.CREATING_ENDPOINT, Status.DOWNLOADING_MODEL, Status.LOADING_MODEL, Status.READY}
_STAGES = 3


class _Superseded(Exception):
    """The deployment left provisioning (deleted or failed) while this attempt was creating resources."""


def provision(message: DeploymentRequested, deps: StepDeps) -> str:
    """Advance the deployment as far as provisioning goes; returns what happened, for the log.

    Raises:
        PermanentError: the deployment must fail with ``reason`` (the handler fails it and tears down); the sealed
            credentials that do not open are one (CredentialsUnreadableError: no Runpod call is possible).
        RetryableError: try the delivery again.
    """
    deployment_id = message.deployment_id
    first_status: Status | None = None
    for _ in range(_STAGES + 1):
        doc = deps.store.get(deployment_id)
        settled = _settled(deps, doc)
        if settled is not None or doc is None:
            return settled or "no such deployment"
        status = Status(doc["status"])
        first_status = first_status or status
        credentials = open_credentials(deps, deployment_id)
        if credentials is None:
            return "credentials erased (deleted meanwhile): not provisioned"
        try:
            if status is Status.VALIDATING:
                _check_model(deps, doc, credentials)
            elif status is Status.SELECTING_GPU:
                _select_gpus(deps, doc, deps.runpod.client(credentials.runpod_api_key))
            else:
                # An attempt that began in creating_endpoint resumes one that may have created without recording.
                return _create_resources(deps, doc, credentials, resumed=first_status is Status.CREATING_ENDPOINT)
        except IllegalTransitionError:
            continue  # another delivery (or a delete) moved it meanwhile: look again
        except _Superseded:
            release(deps, deployment_id, credentials.runpod_api_key)
            return "deleted or failed while creating: removed what was created"
    return "gave up: the deployment kept changing"


def _settled(deps: StepDeps, doc: dict[str, Any] | None) -> str | None:
    """Why there is nothing (more) to provision, or None while there is."""
    if doc is None:
        return "no such deployment"
    status = Status(doc["status"])
    if status in (Status.DELETING, Status.DELETED):
        return "deleted meanwhile: not provisioned"
    if status is Status.FAILED:
        _finish_teardown(deps, doc)
        return "failed already"
    if status in (Status.DOWNLOADING_MODEL, Status.LOADING_MODEL):
        # The worker reported before the attempt that created the endpoint was done (workersMin > 0 starts one at
        # once): that attempt may have died before scheduling the watchdog. The task name dedupes a repeat.
        schedule_readiness(deps, doc["deployment_id"], check=0, delay_s=deps.settings.readiness_first_check_s)
    if status not in (Status.VALIDATING, Status.SELECTING_GPU, Status.CREATING_ENDPOINT):
        return f"provisioned already ({status.value})"
    return None


def finish_failed_teardown(message: DeploymentRequested, deps: StepDeps) -> str:
    """All that a delivery older than ``MAX_EVENT_AGE_S`` may still do: finish a failed deployment's teardown."""
    doc = deps.store.get(message.deployment_id)
    if doc is not None and _finish_teardown(deps, doc):
        return "late delivery: finished the teardown of the failed deployment"
    return "late delivery dropped: nothing left to tear down"


def _finish_teardown(deps: StepDeps, doc: dict[str, Any]) -> bool:
    """Tear down a failed deployment whose teardown did not finish (Runpod failed, or the process died)."""
    if doc["status"] != Status.FAILED.value or doc.get("torn_down_at") or not may_exist_on_runpod(doc):
        return False
    release(deps, doc["deployment_id"], endpoint_id=doc.get("endpoint_id"))
    return True


def _check_model(deps: StepDeps, doc: dict[str, Any], credentials: SealedCredentials) -> None:
    model = deps.hub.inspect(doc["hf_model_id"], doc["revision"], credentials.hf_token)
    # Issue 13: the task and the LoRA adapters are checked (and the adapters pinned) before any Runpod call.
    model_tasks.check_task(
        doc.get("task") or "text_to_image", model.pipeline_class, model.components, doc["hf_model_id"]
    )
    specs = [model_tasks.LoraSpec.model_validate(lora) for lora in doc.get("loras") or []]
    model_tasks.check_loras(specs, model.pipeline_class, doc["hf_model_id"])
    loras = model_tasks.resolve_loras(
        deps.settings.hf_endpoint, deps.settings.hf_timeout_s, specs, credentials.hf_token
    )
    granted = shared_cache_granted(deps.settings, doc)
    cache_note = "" if granted is None else f"; shared model cache {'granted' if granted else 'not granted'}"
    deps.lifecycle.transition(
        doc["deployment_id"],
        Status.SELECTING_GPU,
        f"{doc['hf_model_id']}@{model.commit_sha[:12]} is a {model.pipeline_class} "
        f"({model.weights_gb:.2f} GB of weights in {model.dtype}); needs about {model.vram_estimate_gb} GB of VRAM"
        f"{cache_note}",
        fields={
            "model_commit_sha": model.commit_sha,
            "pipeline_class": model.pipeline_class,
            "vram_estimate_gb": model.vram_estimate_gb,
            "shared_cache_granted": bool(granted),
            "resolved_loras": [lora.model_dump() for lora in loras],
        },
    )


def shared_cache_granted(settings: Settings, doc: dict[str, Any]) -> bool | None:
    """Whether a ``shared``-scope deployment may read the shared cache (None for other scopes).

    Called once the Hub check passed with the user's token: that check reads the repo's files, which a gated repo
    serves only to tokens granted access, so a gated model gets here only with a token that passed the Hub's gate.
    What remains is the platform's allowlist (and a configured cache).
    """
    if CacheScope(doc.get("cache_scope") or CacheScope.OFF.value) is not CacheScope.SHARED:
        return None
    allowlist = {item.strip() for item in settings.model_cache_shared_allowlist.split(",") if item.strip()}
    return bool(settings.model_cache_s3_url) and doc["hf_model_id"] in allowlist


def _select_gpus(deps: StepDeps, doc: dict[str, Any], client: RunpodClient) -> None:
    tier = GpuTier(doc["gpu_tier"]) if doc.get("gpu_tier") else None
    vram = float(doc["vram_estimate_gb"])
    ranked = rank_pools(deps.gpus.pools(client.gpu_types), vram, tier)
    if not ranked:
        wanted = f" at tier {tier.value} or above" if tier else ""
        # Not a capacity problem that waiting or another window solves: no GPU is big enough at all.
        raise PermanentError(FailureReason.NO_GPU_FITS.value, f"no Runpod GPU pool{wanted} has {vram} GB of VRAM")
    window = ranked[: deps.settings.max_gpu_candidates]
    deps.lifecycle.transition(
        doc["deployment_id"],
        Status.CREATING_ENDPOINT,
        f"GPU pools in priority order: {', '.join(window)}",
        fields={"gpu_ranked": ranked, "gpu_candidates": window},
    )


def _create_resources(deps: StepDeps, doc: dict[str, Any], credentials: SealedCredentials, resumed: bool) -> str:
    """Template, endpoint, warm-up job, watchdog: each recorded before the next, each adopted when it exists."""
    deployment_id = doc["deployment_id"]
    client = deps.runpod.client(credentials.runpod_api_key)
    template_id = doc.get("template_id")
    if not template_id:
        template_id = _ensure_template(client, template_spec(deps, doc, credentials), look_first=resumed)
        _record(deps, deployment_id, {"template_id": template_id}, f"created Runpod template {template_id}")
    endpoint_id = doc.get("endpoint_id")
    if not endpoint_id:
        spec = endpoint_spec(deps.settings, doc, template_id, doc["gpu_candidates"])
        endpoint = _ensure_endpoint(client, spec, deployment_id, look_first=resumed)
        endpoint_id = _record_endpoint(deps, client, deployment_id, endpoint, doc["gpu_candidates"])
    # The watchdog before the warm-up: once a job runs, the worker may report and move the status on, after which
    # a redelivery has nothing left to do here.
    schedule_readiness(deps, deployment_id, check=0, delay_s=deps.settings.readiness_first_check_s)
    if not doc.get("warmup_job_id"):
        # workersMin is 0 by default: without a job, no worker would start, load the model and prove it.
        job = client.run(endpoint_id, {"warmup": True})
        _record(deps, deployment_id, {"warmup_job_id": job.id}, "submitted the warm-up job; waiting for a worker")
    return f"endpoint {endpoint_id} created; warm-up submitted"


def _ensure_template(client: RunpodClient, spec: TemplateSpec, look_first: bool) -> str:
    if look_first:
        existing = _find_template(client, spec.name)
        if existing:
            return existing
    try:
        return client.save_template(spec).id
    except RunpodNameTakenError:
        existing = _find_template(client, spec.name)
        if existing is None:
            raise
        return existing


def _find_template(client: RunpodClient, name: str) -> str | None:
    _, templates = client.resources()
    return next((t.id for t in templates if t.name == name), None)


def _ensure_endpoint(client: RunpodClient, spec: EndpointSpec, deployment_id: str, look_first: bool) -> Endpoint:
    if look_first:
        existing = _find_endpoint(client, deployment_id)
        if existing:
            return existing
    try:
        return client.save_endpoint(spec)
    except RunpodNameTakenError:
        existing = _find_endpoint(client, deployment_id)
        if existing is None:
            raise
        return existing


def _find_endpoint(client: RunpodClient, deployment_id: str) -> Endpoint | None:
    endpoints, _ = client.resources()
    return next((e for e in endpoints if is_resource_of(e.name, deployment_id)), None)


def _record_endpoint(
    deps: StepDeps, client: RunpodClient, deployment_id: str, endpoint: Endpoint, pools: list[str]
) -> str:
    """Record the endpoint unless another attempt recorded one first; then remove ours and use theirs."""
    fields = {"endpoint_id": endpoint.id, "endpoint_url": client.endpoint_url(endpoint.id)}
    message = f"created Runpod endpoint {endpoint.id} on {', '.join(pools)}"
    if deps.store.update_if_status(deployment_id, _RECORDABLE, fields, message=message, unless_set="endpoint_id"):
        return endpoint.id
    doc = deps.store.get(deployment_id) or {}
    recorded = doc.get("endpoint_id")
    if not recorded or Status(doc["status"]) not in _RECORDABLE:
        raise _Superseded
    if recorded != endpoint.id:
        logger.warning("another attempt recorded endpoint %s first: removing our duplicate %s", recorded, endpoint.id)
        with contextlib.suppress(RunpodNotFoundError):  # an attempt that found it by name may have removed it
            remove_endpoint(client, endpoint)
    return str(recorded)


def _record(deps: StepDeps, deployment_id: str, fields: dict[str, Any], message: str) -> None:
    if deps.store.update_if_status(deployment_id, _RECORDABLE, fields, message=message) is None:
        raise _Superseded


def schedule_readiness(deps: StepDeps, deployment_id: str, check: int, delay_s: float) -> None:
    """The watchdog's next look; the task name carries the check number, so a repeat is deduplicated."""
    deps.tasks.schedule(
        QUEUE_READINESS,
        function("readiness").path,
        ReadinessCheck(deployment_id=deployment_id, check=check),
        name=f"readiness-{deployment_id}-{check}",
        delay_s=delay_s,
    )


def callback_url(settings: Settings, deployment_id: str, route: str = "phase") -> str:
    """The callback function's URL for one deployment: ``phase`` reports or ``cache-grant`` requests."""
    base = f"{settings.functions_base_url.rstrip('/')}{function('callback').path}"
    return f"{base}/v1/deployments/{deployment_id}/{route}"


def template_spec(deps: StepDeps, doc: dict[str, Any], credentials: SealedCredentials) -> TemplateSpec:
    """The worker's template: image pinned by digest, env per docs/contracts.md (secrets live only here)."""
    settings = deps.settings
    deployment_id = doc["deployment_id"]
    secrets = deps.store.secrets(deployment_id) or {}
    env = {
        "VISGATE_DEPLOYMENT_ID": deployment_id,
        "VISGATE_CALLBACK_URL": callback_url(settings, deployment_id),
        "VISGATE_CALLBACK_SECRET": deps.sealer.callback_secret(deployment_id, str(secrets.get("callback_nonce", ""))),
        "HF_MODEL_ID": doc["hf_model_id"],
        "HF_MODEL_REVISION": doc["model_commit_sha"],
        "HF_ENDPOINT": settings.hf_endpoint,
        **_cache_env(settings, doc, credentials),
        "WORKER_TASK": doc.get("task") or "text_to_image",
    }
    if doc.get("resolved_loras"):
        env["WORKER_LORAS"] = model_tasks.loras_env(
            model_tasks.ResolvedLora.model_validate(lora) for lora in doc["resolved_loras"]
        )
    if settings.worker_dtype:
        # Only an explicit override: unset, the worker picks the model's own dtype (shared.hub_rules.target_dtype),
        # which is also the one the VRAM estimate assumed.
        env["WORKER_DTYPE"] = settings.worker_dtype
    if credentials.hf_token:
        env["HF_TOKEN"] = credentials.hf_token
    return TemplateSpec(
        name=resource_name(deployment_id),
        imageName=settings.worker_image,
        env=env,
        containerDiskInGb=settings.worker_container_disk_gb,
    )


def _cache_env(settings: Settings, doc: dict[str, Any], credentials: SealedCredentials) -> dict[str, str]:
    """The cache part of the worker env. The template lives in the user's Runpod account, so it carries the user's
    own keys (``private``) and never the platform's: a ``shared`` worker asks the callback function for a grant."""
    scope = CacheScope(doc.get("cache_scope") or CacheScope.OFF.value)
    if scope is CacheScope.PRIVATE:
        values = {
            "MODEL_CACHE_SCOPE": scope.value,
            "MODEL_CACHE_S3_URL": doc.get("user_s3_url"),
            "MODEL_CACHE_AWS_ACCESS_KEY_ID": credentials.user_aws_access_key_id,
            "MODEL_CACHE_AWS_SECRET_ACCESS_KEY": credentials.user_aws_secret_access_key,
            "MODEL_CACHE_AWS_ENDPOINT_URL": doc.get("user_aws_endpoint_url"),
            "MODEL_CACHE_AWS_REGION": doc.get("user_aws_region"),
        }
    elif scope is CacheScope.SHARED and doc.get("shared_cache_granted"):
        values = {
            "MODEL_CACHE_SCOPE": scope.value,
            "VISGATE_CACHE_GRANT_URL": callback_url(settings, doc["deployment_id"], "cache-grant"),
        }
    else:
        # Not granted (a model off the allowlist): the worker goes to the Hub without asking.
        values = {"MODEL_CACHE_SCOPE": CacheScope.OFF.value}
    return {key: value for key, value in values.items() if value}


def endpoint_spec(settings: Settings, doc: dict[str, Any], template_id: str, pools: list[str]) -> EndpointSpec:
    """The whole endpoint config (``saveEndpoint`` replaces all of it, so updates rebuild it from here)."""
    return EndpointSpec(
        name=resource_name(doc["deployment_id"]),
        templateId=template_id,
        gpuIds=",".join(pools),
        workersMin=int(doc["workers_min"]),
        workersMax=int(doc["workers_max"]),
        idleTimeout=int(doc["idle_timeout_seconds"]),
        scalerType=settings.endpoint_scaler_type,
        scalerValue=settings.endpoint_scaler_value,
        flashboot=settings.endpoint_flashboot,
        executionTimeoutMs=settings.worker_execution_timeout_s * 1000,
    )

"""provision: ``validating → selecting_gpu → creating_endpoint``, then a warm-up job and the readiness watchdog.

At-least-once delivery is the norm, so every stage starts from what the document says (:func:`next_stage`, a pure
decision):

- a stage already passed is not repeated (the model check and the GPU plan are recorded with their transition);
- the endpoint id is recorded before the next step; an attempt that begins where a previous one was creating looks
  for the endpoint by name first (Runpod does not refuse a duplicate name), and adopts it;
- two concurrent attempts may each create an endpoint: the id is recorded only while none is, and the attempt
  that loses removes its own endpoint and goes on with the recorded one;
- the readiness watchdog is scheduled before the warm-up job (and again by any later delivery while the worker is
  reporting), so it cannot be lost between a worker's first report and the end of this attempt;
- when the deployment was deleted meanwhile, nothing is created, and what this attempt created is torn down again.
"""

from __future__ import annotations

import contextlib
import logging
from enum import StrEnum

from shared import model_tasks
from shared.config import Settings
from shared.deployments.credentials import callback_secret
from shared.deployments.deps import StepDeps
from shared.deployments.endpoint_spec import endpoint_spec, is_resource_of, worker_env
from shared.deployments.readiness import schedule_readiness
from shared.deployments.teardown import release
from shared.document import Deployment
from shared.errors import IllegalTransitionError, PermanentError
from shared.gpu import PoolRanking, rank_pools
from shared.lifecycle import FailureReason, Status
from shared.messages import DeploymentRequested
from shared.models import CacheScope, SealedCredentials, SkippedPoolView
from shared.runpod.client import Endpoint, RunpodClient
from shared.runpod.errors import RunpodNotFoundError

logger = logging.getLogger(__name__)

# Statuses in which the endpoint exists and may still be recorded (the worker may report before we finish).
_RECORDABLE = {Status.CREATING_ENDPOINT, Status.DOWNLOADING_MODEL, Status.LOADING_MODEL, Status.READY}
_STAGES = 3


class Stage(StrEnum):
    """What a delivery of ``deployment-requested`` has to do with the deployment as it is now."""

    CHECK_MODEL = "check_model"
    SELECT_GPUS = "select_gpus"
    CREATE_ENDPOINT = "create_endpoint"
    WATCH = "watch"  # the worker is reporting: only make sure the watchdog runs
    FINISH_TEARDOWN = "finish_teardown"  # failed, but its teardown did not finish
    NOTHING = "nothing"


_STAGE_OF = {
    Status.VALIDATING: Stage.CHECK_MODEL,
    Status.SELECTING_GPU: Stage.SELECT_GPUS,
    Status.CREATING_ENDPOINT: Stage.CREATE_ENDPOINT,
    Status.DOWNLOADING_MODEL: Stage.WATCH,
    Status.LOADING_MODEL: Stage.WATCH,
}


def next_stage(doc: Deployment | None) -> Stage:
    """The stage a delivery starts at (pure)."""
    if doc is None:
        return Stage.NOTHING
    if doc.status is Status.FAILED and doc.runpod.torn_down_at is None and doc.may_exist_on_runpod():
        return Stage.FINISH_TEARDOWN
    return _STAGE_OF.get(doc.status, Stage.NOTHING)


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
    first: Stage | None = None
    credentials: SealedCredentials | None = None
    # Each stage goes on from the document its own transition wrote (no read in between: the user waits on these
    # round trips); a refused transition reads it again.
    doc = deps.store.get(deployment_id)
    for _ in range(_STAGES + 1):
        stage = next_stage(doc)
        first = first or stage
        if doc is None or stage in (Stage.NOTHING, Stage.FINISH_TEARDOWN, Stage.WATCH):
            return _settle(deps, doc, stage)
        # Opened once per delivery: erased credentials (a delete meanwhile) also refuse the next transition.
        credentials = credentials or deps.credentials(deployment_id)
        if credentials is None:
            return "credentials erased (deleted meanwhile): not provisioned"
        try:
            if stage is Stage.CHECK_MODEL:
                doc = _check_model(deps, doc, credentials)
            elif stage is Stage.SELECT_GPUS:
                doc = _select_gpus(deps, doc, deps.runpod.client(credentials.runpod_api_key))
            else:
                # An attempt that began in creating_endpoint resumes one that may have created without recording.
                return _create_endpoint(deps, doc, credentials, resumed=first is Stage.CREATE_ENDPOINT)
        except IllegalTransitionError:
            doc = deps.store.get(deployment_id)  # another delivery (or a delete) moved it meanwhile: look again
            continue
        except _Superseded:
            release(deps, deployment_id, credentials.runpod_api_key)
            return "deleted or failed while creating: removed what was created"
    return "gave up: the deployment kept changing"


def _settle(deps: StepDeps, doc: Deployment | None, stage: Stage) -> str:
    """A delivery that has nothing to provision: what is left to do, done."""
    if doc is None:
        return "nothing to provision (no such deployment)"
    if stage is Stage.FINISH_TEARDOWN:
        release(deps, doc.deployment_id, endpoint_id=doc.runpod.endpoint_id)
        return "failed already: finished its teardown"
    if stage is Stage.WATCH:
        # The worker reported before the attempt that created the endpoint was done (workers min > 0 starts one
        # at once): that attempt may have died before scheduling the watchdog. The task name dedupes a repeat.
        schedule_readiness(deps, doc.deployment_id, check=0, delay_s=deps.settings.readiness_first_check_s)
        return f"provisioned already ({doc.status.value})"
    return f"nothing to provision ({doc.status.value})"


def finish_failed_teardown(message: DeploymentRequested, deps: StepDeps) -> str:
    """All that a delivery older than ``MAX_EVENT_AGE_S`` may still do: finish a failed deployment's teardown."""
    doc = deps.store.get(message.deployment_id)
    if doc is not None and next_stage(doc) is Stage.FINISH_TEARDOWN:
        release(deps, doc.deployment_id, endpoint_id=doc.runpod.endpoint_id)
        return "late delivery: finished the teardown of the failed deployment"
    return "late delivery dropped: nothing left to tear down"


def _check_model(deps: StepDeps, doc: Deployment, credentials: SealedCredentials) -> Deployment:
    model = deps.hub.inspect(doc.hf_model_id, doc.revision, credentials.hf_token)
    # The task and the LoRA adapters are checked (and the adapters pinned) before any Runpod call.
    model_tasks.check_task(doc.task, model.pipeline_class, model.components, doc.hf_model_id)
    model_tasks.check_loras(doc.loras, model.pipeline_class, doc.hf_model_id)
    loras = model_tasks.resolve_loras(
        deps.settings.hf_endpoint, deps.settings.hf_timeout_s, doc.loras, credentials.hf_token
    )
    granted = shared_cache_granted(deps.settings, doc)
    cache_note = "" if granted is None else f"; shared model cache {'granted' if granted else 'not granted'}"

    def record_model(d: Deployment) -> None:
        d.model_commit_sha = model.commit_sha
        d.pipeline_class = model.pipeline_class
        d.vram_estimate_gb = model.vram_estimate_gb
        d.shared_cache_granted = bool(granted)
        d.resolved_loras = loras

    return deps.transitions.move(
        doc.deployment_id,
        Status.SELECTING_GPU,
        f"{doc.hf_model_id}@{model.commit_sha[:12]} is a {model.pipeline_class} "
        f"({model.weights_gb:.2f} GB of weights in {model.dtype}); needs about {model.vram_estimate_gb} GB of VRAM"
        f"{cache_note}",
        apply=record_model,
    ).document


def shared_cache_granted(settings: Settings, doc: Deployment) -> bool | None:
    """Whether a ``shared``-scope deployment may read the shared cache (None for other scopes).

    Called once the Hub check passed with the user's token: that check reads the repo's files, which a gated repo
    serves only to tokens granted access, so a gated model gets here only with a token that passed the Hub's gate.
    What remains is the platform's allowlist (and a configured cache).
    """
    if doc.cache_scope is not CacheScope.SHARED:
        return None
    allowlist = {item.strip() for item in settings.model_cache_shared_allowlist.split(",") if item.strip()}
    return bool(settings.model_cache_s3_url) and doc.hf_model_id in allowlist


def gpu_plan(ranking: PoolRanking, doc: Deployment, window_size: int) -> list[str]:
    """The first window of pools to try (pure). Raises PermanentError ``no_gpu_fits`` when no pool fits at all."""
    if not ranking.ranked:
        wanted = f" at tier {doc.gpu_tier.value} or above" if doc.gpu_tier else ""
        # Not a capacity problem that waiting or another window solves: no GPU is big enough at all.
        raise PermanentError(
            FailureReason.NO_GPU_FITS.value, f"no Runpod GPU pool{wanted} has {doc.vram_estimate_gb} GB of VRAM"
        )
    return list(ranking.ranked[:window_size])


def _select_gpus(deps: StepDeps, doc: Deployment, client: RunpodClient) -> Deployment:
    assert doc.vram_estimate_gb is not None, "the model check estimates VRAM before the GPU choice"
    ranking = rank_pools(deps.gpus.pools(client.gpu_catalog), doc.vram_estimate_gb, doc.gpu_tier)
    window = gpu_plan(ranking, doc, deps.settings.max_gpu_candidates)

    def record_plan(d: Deployment) -> None:
        d.gpu.ranked = list(ranking.ranked)
        d.gpu.window = window
        d.gpu.skipped = [SkippedPoolView(pool=s.pool, reason=s.reason) for s in ranking.skipped]

    return deps.transitions.move(
        doc.deployment_id,
        Status.CREATING_ENDPOINT,
        f"GPU pools in priority order: {', '.join(window)}",
        apply=record_plan,
    ).document


def _create_endpoint(deps: StepDeps, doc: Deployment, credentials: SealedCredentials, resumed: bool) -> str:
    """Endpoint, warm-up job, watchdog: each recorded before the next, an endpoint of our name adopted."""
    deployment_id = doc.deployment_id
    client = deps.runpod.client(credentials.runpod_api_key)
    endpoint_id = doc.runpod.endpoint_id
    if not endpoint_id:
        endpoint = _find_endpoint(client, deployment_id) if resumed else None
        if endpoint is None:
            env = worker_env(deps.settings, doc, credentials, callback_secret(deps.store, deps.sealer, deployment_id))
            endpoint = client.create_endpoint(endpoint_spec(deps.settings, doc, env, doc.gpu.window))
        endpoint_id = _record_endpoint(deps, client, deployment_id, endpoint, doc.gpu.window)
    # The watchdog before the warm-up: once a job runs, the worker may report and move the status on, after which
    # a redelivery has nothing left to do here.
    schedule_readiness(deps, deployment_id, check=0, delay_s=deps.settings.readiness_first_check_s)
    if not doc.runpod.warmup_job_id:
        # Workers min is 0 by default: without a job, no worker would start, load the model and prove it.
        job = client.run(endpoint_id, {"warmup": True})

        def record_job(d: Deployment) -> bool:
            if d.status not in _RECORDABLE:
                raise _Superseded
            d.runpod.warmup_job_id = job.id
            return True

        deps.store.update(deployment_id, record_job, message="submitted the warm-up job; waiting for a worker")
    return f"endpoint {endpoint_id} created; warm-up submitted"


def _find_endpoint(client: RunpodClient, deployment_id: str) -> Endpoint | None:
    return next((e for e in client.list_endpoints() if is_resource_of(e.name, deployment_id)), None)


def _record_endpoint(
    deps: StepDeps, client: RunpodClient, deployment_id: str, endpoint: Endpoint, pools: list[str]
) -> str:
    """Record the endpoint unless another attempt recorded one first; then remove ours and use theirs."""
    recorded: list[str | None] = [None]

    def record(d: Deployment) -> bool:
        if d.status not in _RECORDABLE:
            raise _Superseded
        if d.runpod.endpoint_id:
            recorded[0] = d.runpod.endpoint_id
            return False
        d.runpod.endpoint_id = endpoint.id
        d.runpod.endpoint_url = client.endpoint_url(endpoint.id)
        return True

    message = f"created Runpod endpoint {endpoint.id} on {', '.join(pools)}"
    if deps.store.update(deployment_id, record, message=message) is not None:
        return endpoint.id
    theirs = str(recorded[0])
    if theirs != endpoint.id:
        logger.warning("another attempt recorded endpoint %s first: removing our duplicate %s", theirs, endpoint.id)
        with contextlib.suppress(RunpodNotFoundError):  # an attempt that found it by name may have removed it
            client.delete_endpoint(endpoint.id)
    return theirs

"""Worker start-up: prove the model, then take jobs. ``python -m worker.main``.

1. Report ``downloading_model`` and fetch the pinned commit (S3 cache or Hub, verified), with byte progress, and
   the LoRA adapters of ``WORKER_LORAS`` (Hub, verified).
2. Report ``loading_model`` and load the pipeline (explicit device and dtype, offline), fuse the adapters, build
   the task's pipeline (``WORKER_TASK``) and apply the speed settings.
3. Run one warm-up generation of the task, report ``ready`` with the timings, and hand the handler to the runpod
   SDK, which runs its job loop (or, without ``RUNPOD_WEBHOOK_GET_JOB``, its local ``--test_input`` mode).

Any failure reports ``failed`` with a reason code and exits with status 1 (2 for an invalid configuration), so
Runpod marks the worker unhealthy instead of leaving it idle.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import runpod
from pydantic import ValidationError
from runpod.serverless.modules.rp_logger import RunPodLogger

from shared.lifecycle import FailureReason
from worker.cache import S3Location, S3ModelCache, make_s3_client
from worker.cache_grant import SharedCacheGrant
from worker.devices import gpu_name, is_out_of_memory, resolve_device, resolve_dtype
from worker.errors import WorkerError
from worker.handler import make_handler
from worker.hub_client import HubClient
from worker.images import ImageFetcher
from worker.loaded_model import LoadedModel
from worker.logs import configure_logging
from worker.model_fetch import FetchRequest, FetchResult, ModelCache, fetch_lora, fetch_model
from worker.output import OutputBuckets
from worker.pipeline_load import load_model
from worker.pipeline_options import LoadOptions, LoraWeights
from worker.reporter import PhaseReporter, progress_ticker
from worker.settings import WorkerSettings, get_report_settings, get_settings

logger = logging.getLogger("worker.main")

EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2


@dataclass(frozen=True)
class StartupTimings:
    """Seconds spent in each start-up phase."""

    download_s: float
    load_s: float
    warmup_s: float


def build_cache(settings: WorkerSettings) -> ModelCache | None:
    """The cache of the configured scope: the user's bucket (``private``), a grant from the callback function
    (``shared``), or None (``off``, or ``shared`` without a grant URL: the Hub, with a warning)."""
    if settings.model_cache_scope == "shared":
        secret = settings.visgate_callback_secret
        if not settings.visgate_cache_grant_url or secret is None:
            logger.warning("MODEL_CACHE_SCOPE=shared without VISGATE_CACHE_GRANT_URL: fetching from the Hub")
            return None
        return SharedCacheGrant(
            settings.visgate_cache_grant_url,
            settings.visgate_deployment_id,
            secret.get_secret_value(),
            concurrency=settings.worker_download_concurrency,
            part_size=settings.download_part_size,
        )
    if settings.model_cache_scope == "off":
        return None
    if not settings.model_cache_s3_url:
        raise WorkerError("MODEL_CACHE_SCOPE=private needs MODEL_CACHE_S3_URL")
    key_id, secret_key = settings.model_cache_aws_access_key_id, settings.model_cache_aws_secret_access_key
    client = make_s3_client(
        endpoint_url=settings.model_cache_aws_endpoint_url,
        access_key_id=key_id.get_secret_value() if key_id else None,
        secret_access_key=secret_key.get_secret_value() if secret_key else None,
        region=settings.model_cache_aws_region,
        max_connections=settings.worker_download_concurrency,
    )
    return S3ModelCache(
        client,
        S3Location.parse(settings.model_cache_s3_url),
        concurrency=settings.worker_download_concurrency,
        part_size=settings.download_part_size,
    )


def start_up(settings: WorkerSettings, reporter: PhaseReporter) -> tuple[LoadedModel, FetchResult, StartupTimings]:
    """Fetch, load and warm up the model, reporting each phase (but not ``ready`` nor ``failed``).

    Raises:
        WorkerError: a reason-coded failure (load and warm-up failures are ``model_load_failed``); other
            exceptions are out of memory or unexpected (``internal``).
    """
    device = resolve_device(settings.worker_device)
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    request = FetchRequest(
        model_id=settings.hf_model_id,
        revision=settings.hf_model_revision,
        model_dir=settings.worker_model_dir,
        device=device,
        dtype=settings.worker_dtype,
        scope=settings.model_cache_scope,
    )
    started = time.perf_counter()
    hub = HubClient(settings.hf_endpoint, token, concurrency=min(8, settings.worker_download_concurrency))
    reporter.downloading(0, 0)
    with progress_ticker(reporter) as progress:
        fetched = fetch_model(request, hub, build_cache(settings), progress)
    # LoRA adapters come from the Hub with the same verification (safetensors only, sizes and sha256).
    loras = tuple(
        LoraWeights(
            model_id=lora.hf_model_id,
            revision=lora.revision,
            path=fetch_lora(lora.hf_model_id, lora.revision, lora.weight_name, settings.worker_model_dir, hub),
            scale=lora.scale,
        )
        for lora in settings.worker_loras
    )
    download_s = time.perf_counter() - started
    logger.info(
        "model fetched",
        extra={"source": fetched.source, "bytes": fetched.manifest.total_bytes, "seconds": round(download_s, 3)},
    )

    reporter.loading()
    started = time.perf_counter()
    dtype = resolve_dtype(device, settings.worker_dtype, fetched.path)
    model = load_model(fetched.path, settings.hf_model_id, device, dtype, load_options(settings, loras))
    load_s = time.perf_counter() - started

    warmup_s = model.warm_up()
    return model, fetched, StartupTimings(download_s=download_s, load_s=load_s, warmup_s=warmup_s)


def load_options(settings: WorkerSettings, loras: tuple[LoraWeights, ...] = ()) -> LoadOptions:
    """The pipeline's load options from the settings."""
    return LoadOptions(
        task=settings.worker_task,
        loras=loras,
        channels_last=settings.worker_channels_last,
        sdpa=settings.worker_sdpa,
        compile=settings.worker_compile,
        compile_mode=settings.worker_compile_mode,
        vae_tiling_above_pixels=settings.worker_vae_tiling_above_pixels,
    )


def config_problems(exc: ValidationError) -> list[str]:
    """``VARIABLE: reason`` for each refused setting, without the values (they include the secrets)."""
    return [
        f"{'.'.join(str(part) for part in err['loc']).upper() or 'ENVIRONMENT'}: {err['msg']}"
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def main() -> int:
    """Start the worker; returns the exit status when start-up fails (the SDK loop otherwise runs on)."""
    try:
        settings = get_settings()
    except ValidationError as exc:
        report_settings = get_report_settings()
        configure_logging(report_settings.visgate_deployment_id, report_settings.worker_log_level)
        problems = config_problems(exc)
        logger.error("invalid worker configuration", extra={"errors": problems})
        # The report lands in the deployment's public document: names and reasons only, never a value.
        PhaseReporter.from_settings(report_settings).failed(
            FailureReason.INTERNAL, "invalid worker configuration: " + "; ".join(problems)
        )
        return EXIT_BAD_CONFIG
    configure_logging(settings.visgate_deployment_id, settings.worker_log_level)
    # Progress reports and `ready` go out from a sender thread, in order: neither the download nor the first
    # job waits on the callback's round trips (about 40 ms each).
    reporter = PhaseReporter.from_settings(settings, background=True)
    try:
        model, fetched, timings = start_up(settings, reporter)
    except WorkerError as exc:
        logger.exception("start-up failed", extra={"reason": exc.reason})
        reporter.failed(exc.reason, str(exc))
        return EXIT_FAILED
    except Exception as exc:
        reason = FailureReason.OUT_OF_MEMORY if is_out_of_memory(exc) else FailureReason.INTERNAL
        logger.exception("start-up failed", extra={"reason": reason})
        reporter.failed(reason, f"{type(exc).__name__}: {exc}")
        return EXIT_FAILED
    reporter.ready(
        timings.download_s,
        timings.load_s,
        timings.warmup_s,
        fetched.loaded_from_cache,
        gpu_type_id=settings.runpod_gpu_name or gpu_name(model.device),
        extra_timings=model.report.timings(),
    )

    RunPodLogger().set_level(settings.runpod_log_level)
    fetcher = ImageFetcher(allow_loopback=settings.worker_image_fetch_allow_loopback)
    runpod.serverless.start({"handler": make_handler(model, OutputBuckets.from_settings(settings), fetcher)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

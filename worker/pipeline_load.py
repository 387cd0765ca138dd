"""Load the diffusers pipeline once, explicitly, into a :class:`worker.loaded_model.LoadedModel`.

- Loading is offline (``local_files_only``) from the verified local folder, safetensors only, at the device and
  dtype of :mod:`worker.devices`, with the weight variant :func:`shared.hub_rules.choose_variant` picks from the
  dtype and the files present (the same rule the fetch used).
- The text-to-image pipeline is loaded, the LoRA adapters are fused into it and the task's pipeline is built over
  it (:mod:`worker.task_pipeline`), then the CUDA speed settings apply (:mod:`worker.speed_settings`). With
  ``WORKER_COMPILE`` the denoiser's compilation (one generation at the warm-up size) is counted in ``load_s``.
  Every choice is in :attr:`worker.loaded_model.LoadedModel.report`, which ``ready`` carries.
- Any load failure but out-of-memory is ``model_load_failed``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import torch
from diffusers import AutoPipelineForText2Image
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from shared.hub_rules import choose_variant, component_variants
from worker.devices import DTYPES, is_out_of_memory
from worker.errors import ModelLoadError
from worker.loaded_model import LoadedModel
from worker.pipeline_options import LoadOptions, LoadReport
from worker.speed_settings import apply_speed_settings
from worker.task_pipeline import fuse_loras, task_pipeline

logger = logging.getLogger(__name__)


def load_model(
    model_dir: Path, model_id: str, device: str, dtype: torch.dtype, options: LoadOptions | None = None
) -> LoadedModel:
    """Load the pipeline from a verified local folder onto ``device`` in ``dtype``, with ``options`` applied (the
    task's pipeline, fused LoRA adapters, the CUDA speed settings).

    Raises:
        ModelLoadError: the folder does not load as a text-to-image pipeline, an adapter does not load, or the task's
            pipeline cannot be built from it (any error but out of memory).
        torch.cuda.OutOfMemoryError: the model does not fit (the caller reports ``out_of_memory``).
    """
    options = options or LoadOptions()
    # Progress bars are terminal output, not log lines: they would garble the JSON logs Runpod collects.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    files = [str(path.relative_to(model_dir)) for path in model_dir.glob("*/*")]
    dtype_name = next(name for name, value in DTYPES.items() if value == dtype)
    try:
        variant = choose_variant(dtype_name, component_variants(files))
        pipe = AutoPipelineForText2Image.from_pretrained(
            model_dir, dtype=dtype, variant=variant, use_safetensors=True, local_files_only=True
        ).to(device)
    except Exception as exc:
        # A state-dict mismatch (RuntimeError), a missing class (ImportError), a bad config (TypeError, ...):
        # all mean these files do not load as this pipeline; only out-of-memory is the GPU's fault.
        if is_out_of_memory(exc):
            raise
        raise ModelLoadError(
            f"{model_id} does not load as a text-to-image pipeline: {type(exc).__name__}: {exc}"
        ) from exc
    started = time.perf_counter()
    fuse_loras(pipe, options.loras)
    lora_s = time.perf_counter() - started
    pipe = task_pipeline(pipe, options.task, model_id)
    pipe.set_progress_bar_config(disable=True)
    on_cuda = device == "cuda"
    settings = apply_speed_settings(pipe, options, on_cuda)
    report = LoadReport(
        settings=settings,
        loras=[
            {
                "hf_model_id": lora.model_id,
                "revision": lora.revision,
                "weight_name": lora.path.name,
                "scale": lora.scale,
            }
            for lora in options.loras
        ],
        lora_s=lora_s,
    )
    model = LoadedModel(
        pipe,
        model_id,
        device,
        dtype,
        task=options.task,
        report=report,
        vae_tiling_above_pixels=options.vae_tiling_above_pixels,
    )
    if settings["compile"]:
        # torch.compile compiles on the first call: make it here, so its time is load time, not the warm-up's.
        started = time.perf_counter()
        model.warm_up()
        model.report = replace(report, compile_s=time.perf_counter() - started)
    logger.info(
        "pipeline loaded",
        extra={
            "pipeline": type(pipe).__name__,
            "device": device,
            "dtype": str(dtype),
            "variant": variant,
            "task": options.task,
            "loras": len(options.loras),
        },
    )
    return model

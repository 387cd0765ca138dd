"""Load the diffusers pipeline once, explicitly, and run generations against it.

- Device and dtype are explicit: ``WORKER_DEVICE``/``WORKER_DTYPE`` when set; otherwise CUDA with float16 (bfloat16
  for models whose configs ask for it, e.g. FLUX) when CUDA is present, else CPU with float32.
- Loading is offline (``local_files_only``) from the verified local folder, safetensors only, with the weight
  variant :func:`shared.hub_rules.choose_variant` picks from the dtype and the files present (the same rule the
  fetch used). No attention slicing: it trades speed for memory, and the GPU was chosen to fit the model.
- Any load or warm-up failure but out-of-memory is ``model_load_failed``; so is a warm-up image that is NaN or all
  black (float16 overflow), since serving it would return black images. The warm-up is small (at most
  256x256, 2 steps): it proves the model end to end without paying for a full-size generation.
- Per-request state never touches the shared pipeline: each call runs on a shallow copy that has its own
  scheduler instance (``__call__`` sets timesteps on the scheduler it holds) and its own seeded generators.
"""

from __future__ import annotations

import copy
import inspect
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoPipelineForText2Image
from diffusers.utils import logging as diffusers_logging
from PIL.Image import Image
from transformers.utils import logging as transformers_logging

from shared.hub_rules import choose_variant, component_variants
from worker.errors import ModelLoadError, WorkerError
from worker.schemas import MAX_SEED, GenerateInput, Parameters
from worker.variants import folder_dtype

logger = logging.getLogger(__name__)

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
FEW_STEP_FAMILIES = {"turbo": 1, "lightning": 4, "schnell": 4}
WARMUP_SEED = 0
WARMUP_STEPS = 2
# A multiple of 16 (FLUX-style pipelines need it), capped at the model's native size.
WARMUP_MAX_SIZE = 256


@dataclass(frozen=True)
class Defaults:
    """What a request gets for the fields it leaves out."""

    num_inference_steps: int
    guidance_scale: float
    width: int
    height: int


@dataclass(frozen=True)
class Generation:
    """The images of one request, with the seed of each and the time spent in the pipeline."""

    images: list[Image]
    seeds: list[int]
    inference_s: float
    parameters: Parameters


def resolve_device(requested: str | None) -> str:
    """``requested`` when given (``cuda`` must then be present), else ``cuda`` when available, else ``cpu``."""
    available = torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise WorkerError("WORKER_DEVICE=cuda but no CUDA device is visible", reason="internal")
    return requested or ("cuda" if available else "cpu")


def resolve_dtype(device: str, requested: str | None, model_dir: Path) -> torch.dtype:
    """The dtype to load with (:func:`worker.variants.folder_dtype`, as the fetch decided it)."""
    return DTYPES[folder_dtype(device, requested, model_dir)]


def gpu_name(device: str) -> str | None:
    """The CUDA device's name (Runpod's GPU type ids are these names), or None on CPU."""
    return torch.cuda.get_device_name(0) if device == "cuda" else None


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a device (or host) out-of-memory error."""
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class LoadedModel:
    """A pipeline loaded once, with its defaults; :meth:`generate` serves requests against it."""

    def __init__(self, pipe: Any, model_id: str, device: str, dtype: torch.dtype) -> None:
        """Wrap a loaded pipeline (already on ``device``)."""
        self.pipe = pipe
        self.model_id = model_id
        self.device = device
        self.dtype = dtype
        self.defaults = _defaults(pipe, model_id)
        self._accepts = set(inspect.signature(pipe.__call__).parameters)
        # One generation at a time: the device runs them one after another anyway, and it bounds peak memory.
        self._lock = threading.Lock()

    def generate(self, request: GenerateInput) -> Generation:
        """Run one request.

        Raises:
            ValueError: the request uses a parameter this pipeline does not take (e.g. a negative prompt).
        """
        if request.negative_prompt is not None and "negative_prompt" not in self._accepts:
            raise ValueError(f"negative_prompt is not supported by {type(self.pipe).__name__}")
        parameters = Parameters(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            num_inference_steps=request.num_inference_steps or self.defaults.num_inference_steps,
            guidance_scale=(self.defaults.guidance_scale if request.guidance_scale is None else request.guidance_scale),
            width=request.width or self.defaults.width,
            height=request.height or self.defaults.height,
            num_images=request.num_images,
            output_format=request.output_format,
        )
        first_seed = secrets.randbelow(MAX_SEED + 1) if request.seed is None else request.seed
        seeds = [(first_seed + index) % (MAX_SEED + 1) for index in range(request.num_images)]
        # CPU generators give the same noise whatever the device, so a seed reproduces across GPU types.
        generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
        started = time.perf_counter()
        images = self._call(parameters, generators, "pil")
        inference_s = time.perf_counter() - started
        return Generation(images=list(images), seeds=seeds, inference_s=inference_s, parameters=parameters)

    def warm_up(self) -> float:
        """One small generation with a fixed seed (proves the model end to end); returns its seconds.

        Raises:
            ModelLoadError: the generation failed (other than out of memory), or its image is NaN or all black.
        """
        parameters = Parameters(
            prompt="a photo of a cat",
            negative_prompt=None,
            num_inference_steps=WARMUP_STEPS,
            guidance_scale=self.defaults.guidance_scale,
            width=min(WARMUP_MAX_SIZE, self.defaults.width),
            height=min(WARMUP_MAX_SIZE, self.defaults.height),
            num_images=1,
            output_format="png",
        )
        started = time.perf_counter()
        try:
            pixels = np.asarray(self._call(parameters, [torch.Generator(device="cpu").manual_seed(WARMUP_SEED)], "np"))
        except Exception as exc:
            if is_out_of_memory(exc):
                raise
            raise ModelLoadError(f"the warm-up inference failed: {type(exc).__name__}: {exc}") from exc
        elapsed = time.perf_counter() - started
        if not np.isfinite(pixels).all():
            raise ModelLoadError(
                f"the warm-up image holds NaN values in {self.dtype} (float16 overflow?): try WORKER_DTYPE=bfloat16"
            )
        if float(pixels.max()) <= 0.0:
            raise ModelLoadError(f"the warm-up image is all black in {self.dtype} (float16 overflow?)")
        return elapsed

    def _call(self, parameters: Parameters, generators: list[torch.Generator], output_type: str) -> Any:
        """Run the pipeline (one call at a time) on a per-request copy; the images in ``output_type``."""
        kwargs: dict[str, Any] = {
            "prompt": parameters.prompt,
            "num_inference_steps": parameters.num_inference_steps,
            "guidance_scale": parameters.guidance_scale,
            "width": parameters.width,
            "height": parameters.height,
            "num_images_per_prompt": parameters.num_images,
            "generator": generators,
            "output_type": output_type,
        }
        if parameters.negative_prompt is not None:
            kwargs["negative_prompt"] = parameters.negative_prompt
        with self._lock:
            return self._request_pipeline()(**kwargs).images

    def _request_pipeline(self) -> Any:
        """A shallow copy of the pipeline sharing every weight but holding a fresh scheduler."""
        request_pipe = copy.copy(self.pipe)
        # The shared scheduler is never called, so a deep copy is a pristine one (and skips __init__'s set-up).
        request_pipe.scheduler = copy.deepcopy(self.pipe.scheduler)
        return request_pipe


def _defaults(pipe: Any, model_id: str) -> Defaults:
    lowered = model_id.lower()
    family = next((name for name in FEW_STEP_FAMILIES if name in lowered), None)
    if family:
        steps, guidance = FEW_STEP_FAMILIES[family], 0.0
    elif type(pipe).__name__.startswith("Flux"):
        steps, guidance = 28, 3.5
    else:
        steps, guidance = 30, 7.5
    width, height = _native_size(pipe)
    return Defaults(num_inference_steps=steps, guidance_scale=guidance, width=width, height=height)


def _native_size(pipe: Any) -> tuple[int, int]:
    """The resolution the model was trained at: latent sample size times the VAE scale factor."""
    scale = int(getattr(pipe, "vae_scale_factor", 8))
    sample = getattr(pipe, "default_sample_size", None)
    if sample is None and getattr(pipe, "unet", None) is not None:
        sample = pipe.unet.config.sample_size
    if sample is None:
        return 1024, 1024
    if isinstance(sample, list | tuple):
        return int(sample[1]) * scale, int(sample[0]) * scale
    return int(sample) * scale, int(sample) * scale


def load_model(model_dir: Path, model_id: str, device: str, dtype: torch.dtype) -> LoadedModel:
    """Load the text-to-image pipeline from a verified local folder onto ``device`` in ``dtype``.

    Raises:
        ModelLoadError: the folder does not load as a text-to-image pipeline (any error but out of memory).
        torch.cuda.OutOfMemoryError: the model does not fit (the caller reports ``out_of_memory``).
    """
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
    pipe.set_progress_bar_config(disable=True)
    logger.info(
        "pipeline loaded",
        extra={"pipeline": type(pipe).__name__, "device": device, "dtype": str(dtype), "variant": variant},
    )
    return LoadedModel(pipe, model_id, device, dtype)

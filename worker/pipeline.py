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
  scheduler instance (``__call__`` sets timesteps on the scheduler it holds) and its own seeded generators. The one
  exception is the VAE's tiling flag, set per call (tiled decode above ``WORKER_VAE_TILING_ABOVE_PIXELS``) under
  the lock that runs one generation at a time, so no call sees another's.
- Tasks (``WORKER_TASK``): the text-to-image pipeline is loaded, LoRA adapters are loaded into it and fused at their
  scales (then unloaded: the fused weights stay, the adapter layers go), and the task's pipeline is built from the
  same components with ``AutoPipelineFor{Image2Image,Inpainting}.from_pipe``: no second copy of the weights.
- On CUDA: ``channels_last`` for the denoiser and the VAE, PyTorch SDPA attention in the UNet/VAE attention blocks
  (the transformer families call SDPA in their own processors), and with ``WORKER_COMPILE`` a ``torch.compile`` of
  the denoiser whose compilation (one generation at the warm-up size) is counted in ``load_s``. Every choice is in
  :attr:`LoadedModel.report`, which ``ready`` carries.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import secrets
import threading
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from diffusers.utils import logging as diffusers_logging
from PIL import Image as PILImage
from PIL.Image import Image
from transformers.utils import logging as transformers_logging

from shared.hub_rules import choose_variant, component_variants
from shared.job_input import Task, task_problems
from shared.lifecycle import FailureReason
from worker.errors import ModelLoadError, WorkerError
from worker.schemas import MAX_SEED, GenerateInput, Parameters
from worker.variants import folder_dtype

logger = logging.getLogger(__name__)

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
FEW_STEP_FAMILIES = {"turbo": 1, "lightning": 4, "schnell": 4}
# (steps, guidance) by model family, as the families' model cards recommend.
FAMILY_DEFAULTS: dict[str, tuple[int, float]] = {
    "sd": (30, 7.5),
    "sdxl": (30, 5.0),
    "sd3": (28, 7.0),
    "flux": (28, 3.5),
}
TASK_PIPELINES: dict[str, Any] = {"image_to_image": AutoPipelineForImage2Image, "inpainting": AutoPipelineForInpainting}
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
class LoraWeights:
    """A fetched LoRA adapter: its safetensors file and the scale it is fused at."""

    model_id: str
    revision: str
    path: Path
    scale: float = 1.0


@dataclass(frozen=True)
class LoadOptions:
    """How the pipeline is built (the ``WORKER_*`` settings of the task, LoRA and speed)."""

    task: Task = "text_to_image"
    loras: tuple[LoraWeights, ...] = ()
    channels_last: bool = True
    sdpa: bool = True
    compile: bool = False
    compile_mode: str = "default"
    vae_tiling_above_pixels: int = 1024 * 1024


@dataclass(frozen=True)
class LoadReport:
    """What the load did, for ``ready``'s timings: the effective settings, the fused adapters and their time."""

    settings: dict[str, Any]
    loras: list[dict[str, Any]]
    lora_s: float = 0.0
    compile_s: float = 0.0

    def timings(self) -> dict[str, Any]:
        """The extra fields of ``ready``'s ``timings``."""
        return {
            "lora_s": round(self.lora_s, 3),
            "compile_s": round(self.compile_s, 3),
            "loras": self.loras,
            "settings": self.settings,
        }


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
        raise WorkerError("WORKER_DEVICE=cuda but no CUDA device is visible", reason=FailureReason.INTERNAL)
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

    def __init__(
        self,
        pipe: Any,
        model_id: str,
        device: str,
        dtype: torch.dtype,
        *,
        task: Task = "text_to_image",
        report: LoadReport | None = None,
        vae_tiling_above_pixels: int = 0,
    ) -> None:
        """Wrap a loaded pipeline of ``task`` (already on ``device``)."""
        self.pipe = pipe
        self.model_id = model_id
        self.device = device
        self.dtype = dtype
        self.task: Task = task
        self.report = report or LoadReport(settings={"task": task}, loras=[])
        self.defaults = _defaults(pipe, model_id)
        self.vae_tiling_above_pixels = vae_tiling_above_pixels
        signature = inspect.signature(pipe.__call__).parameters
        self._accepts = set(signature)
        strength = signature.get("strength")
        self._default_strength = (
            float(strength.default)
            if strength is not None and isinstance(strength.default, int | float) and task != "text_to_image"
            else None
        )
        # One generation at a time: the device runs them one after another anyway, and it bounds peak memory.
        self._lock = threading.Lock()

    def check(self, request: GenerateInput) -> None:
        """Refuse a request this deployment cannot serve, before its images are read.

        Raises:
            ValueError: ``field: reason`` for each problem (a missing image for an image task, a parameter this
                pipeline does not take, ...).
        """
        problems = task_problems(request, self.task)
        if request.negative_prompt is not None and "negative_prompt" not in self._accepts:
            problems.append(f"negative_prompt: not supported by {type(self.pipe).__name__}")
        if problems:
            raise ValueError("; ".join(problems))

    def generate(
        self, request: GenerateInput, image: Image | None = None, mask_image: Image | None = None
    ) -> Generation:
        """Run one request (``image`` and ``mask_image``: the request's decoded images, for the image tasks).

        Raises:
            ValueError: the request does not fit this deployment (:meth:`check`), or the pipeline refused it.
        """
        self.check(request)
        if self.task != "text_to_image" and image is None:
            raise ValueError(f"image: required by an {self.task} deployment")
        if self.task == "inpainting" and mask_image is None:
            raise ValueError("mask_image: required by an inpainting deployment")
        parameters = Parameters(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            num_inference_steps=request.num_inference_steps or self.defaults.num_inference_steps,
            guidance_scale=(self.defaults.guidance_scale if request.guidance_scale is None else request.guidance_scale),
            width=request.width or self.defaults.width,
            height=request.height or self.defaults.height,
            num_images=request.num_images,
            output_format=request.output_format,
            strength=self._default_strength if request.strength is None else request.strength,
        )
        if parameters.strength is not None and int(parameters.num_inference_steps * parameters.strength) < 1:
            raise ValueError(
                f"num_inference_steps: {parameters.num_inference_steps} steps at strength {parameters.strength} "
                f"denoise no step; use at least {math.ceil(1 / parameters.strength) if parameters.strength else 1} "
                "steps or a higher strength"
            )
        first_seed = secrets.randbelow(MAX_SEED + 1) if request.seed is None else request.seed
        seeds = [(first_seed + index) % (MAX_SEED + 1) for index in range(request.num_images)]
        # CPU generators give the same noise whatever the device, so a seed reproduces across GPU types.
        generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
        started = time.perf_counter()
        images = self._call(parameters, generators, "pil", image, mask_image)
        inference_s = time.perf_counter() - started
        return Generation(images=list(images), seeds=seeds, inference_s=inference_s, parameters=parameters)

    def warm_up(self) -> float:
        """One small generation with a fixed seed (proves the model end to end); returns its seconds.

        Raises:
            ModelLoadError: the generation failed (other than out of memory), or its image is NaN or all black.
        """
        # An image task denoises steps x strength of the steps: at least one of them must run.
        strength = self._default_strength or 1.0
        parameters = Parameters(
            prompt="a photo of a cat",
            negative_prompt=None,
            num_inference_steps=max(WARMUP_STEPS, math.ceil(1 / strength)),
            guidance_scale=self.defaults.guidance_scale,
            width=min(WARMUP_MAX_SIZE, self.defaults.width),
            height=min(WARMUP_MAX_SIZE, self.defaults.height),
            num_images=1,
            output_format="png",
            strength=self._default_strength,
        )
        image, mask = warmup_images(parameters.width, parameters.height)
        started = time.perf_counter()
        try:
            pixels = np.asarray(
                self._call(
                    parameters,
                    [torch.Generator(device="cpu").manual_seed(WARMUP_SEED)],
                    "np",
                    image if self.task != "text_to_image" else None,
                    mask if self.task == "inpainting" else None,
                )
            )
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

    def _call(
        self,
        parameters: Parameters,
        generators: list[torch.Generator],
        output_type: str,
        image: Image | None = None,
        mask_image: Image | None = None,
    ) -> Any:
        """Run the pipeline (one call at a time) on a per-request copy; the images in ``output_type``.

        The input image and mask are resized to the requested size first: the image-to-image pipelines of some
        families take their output size from the image alone.
        """
        size = (parameters.width, parameters.height)
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
        if image is not None:
            kwargs["image"] = image.convert("RGB").resize(size, PILImage.Resampling.LANCZOS)
        if mask_image is not None:
            kwargs["mask_image"] = mask_image.convert("L").resize(size, PILImage.Resampling.NEAREST)
        if parameters.strength is not None:
            kwargs["strength"] = parameters.strength
        kwargs = {name: value for name, value in kwargs.items() if name in self._accepts}
        with self._lock:
            self._set_vae_tiling(parameters.width * parameters.height)
            return self._request_pipeline()(**kwargs).images

    def _set_vae_tiling(self, pixels: int) -> None:
        vae = getattr(self.pipe, "vae", None)
        if vae is None or not hasattr(vae, "enable_tiling"):
            return
        if 0 < self.vae_tiling_above_pixels < pixels:
            vae.enable_tiling()
        else:
            vae.disable_tiling()

    def _request_pipeline(self) -> Any:
        """A shallow copy of the pipeline sharing every weight but holding a fresh scheduler."""
        request_pipe = copy.copy(self.pipe)
        # The shared scheduler is never called, so a deep copy is a pristine one (and skips __init__'s set-up).
        request_pipe.scheduler = copy.deepcopy(self.pipe.scheduler)
        return request_pipe


def warmup_images(width: int, height: int) -> tuple[Image, Image]:
    """A fixed input image (a colour gradient) and mask (the centre quarter) for the image tasks' warm-up."""
    ramp_x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    ramp_y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    pixels = np.stack(
        [
            np.broadcast_to(ramp_x, (height, width)),
            np.broadcast_to(ramp_y, (height, width)),
            np.full((height, width), 128),
        ],
        axis=-1,
    ).astype(np.uint8)
    mask = PILImage.new("L", (width, height), 0)
    mask.paste(255, (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    return PILImage.fromarray(pixels, "RGB"), mask


def family_of(pipe: Any) -> str:
    """The model family of a pipeline (any task of it): ``sd``, ``sdxl``, ``sd3``, ``flux`` or ``other``."""
    name = type(pipe).__name__
    if name.startswith("StableDiffusionXL"):
        return "sdxl"
    if name.startswith("StableDiffusion3"):
        return "sd3"
    if name.startswith("Flux"):
        return "flux"
    if name.startswith("StableDiffusion"):
        return "sd"
    return "other"


def _defaults(pipe: Any, model_id: str) -> Defaults:
    lowered = model_id.lower()
    few_step = next((name for name in FEW_STEP_FAMILIES if name in lowered), None)
    if few_step:
        steps, guidance = FEW_STEP_FAMILIES[few_step], 0.0
    else:
        steps, guidance = FAMILY_DEFAULTS.get(family_of(pipe), (30, 7.5))
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


def fuse_loras(pipe: Any, loras: tuple[LoraWeights, ...]) -> None:
    """Load each adapter into ``pipe``, fuse them all at their scales, then drop the adapter layers.

    Raises:
        ModelLoadError: an adapter does not load into this pipeline (any error but out of memory).
    """
    if not loras:
        return
    names = [f"lora_{index}" for index in range(len(loras))]
    current = loras[0]
    try:
        for name, lora in zip(names, loras, strict=True):
            current = lora
            with warnings.catch_warnings():
                # PEFT warns on every adapter after the first that a model holding several is intended: it is.
                warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
                pipe.load_lora_weights(str(lora.path.parent), weight_name=lora.path.name, adapter_name=name)
        pipe.set_adapters(names, adapter_weights=[lora.scale for lora in loras])
        pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
        pipe.unload_lora_weights()
    except Exception as exc:
        if is_out_of_memory(exc):
            raise
        raise ModelLoadError(
            f"LoRA {current.model_id}@{current.revision[:12]} does not load into {type(pipe).__name__}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def task_pipeline(pipe: Any, task: Task, model_id: str) -> Any:
    """The pipeline of ``task`` over the components of ``pipe`` (the same modules: no weights are copied).

    Raises:
        ModelLoadError: diffusers has no pipeline of that task for this model's class.
    """
    auto = TASK_PIPELINES.get(task)
    if auto is None:
        return pipe
    try:
        return auto.from_pipe(pipe)
    except Exception as exc:
        raise ModelLoadError(
            f"{model_id} ({type(pipe).__name__}) has no {task} pipeline: {type(exc).__name__}: {exc}"
        ) from exc


def denoiser_of(pipe: Any) -> Any:
    """The UNet or the transformer of a pipeline."""
    return getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)


def apply_speed_settings(pipe: Any, options: LoadOptions, on_cuda: bool) -> dict[str, Any]:
    """Apply the CUDA speed settings (none of them on CPU); returns the effective choices."""
    denoiser = denoiser_of(pipe)
    vae = getattr(pipe, "vae", None)
    modules = [module for module in (denoiser, vae) if module is not None]
    channels_last = options.channels_last and on_cuda
    if channels_last:
        for module in modules:
            module.to(memory_format=torch.channels_last)
    sdpa: bool | None = None
    if on_cuda:
        sdpa = options.sdpa
        for module in modules:
            # UNet and VAE attention blocks take either processor; the transformer families' own processors call
            # SDPA already and are left as they are.
            processors = getattr(module, "attn_processors", {})
            if processors and all(isinstance(p, AttnProcessor | AttnProcessor2_0) for p in processors.values()):
                module.set_attn_processor(AttnProcessor2_0() if options.sdpa else AttnProcessor())
    compiled = options.compile and on_cuda and denoiser is not None
    if compiled:
        denoiser.compile(mode=options.compile_mode, fullgraph=False)
    return {
        "task": options.task,
        "family": family_of(pipe),
        "channels_last": channels_last,
        "sdpa": sdpa,
        "compile": compiled,
        "compile_mode": options.compile_mode if compiled else None,
        "vae_tiling_above_pixels": options.vae_tiling_above_pixels,
    }

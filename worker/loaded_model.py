"""A pipeline loaded once, with its defaults, serving generations: :class:`LoadedModel`.

- Per-request state never touches the shared pipeline: each call runs on a shallow copy that has its own
  scheduler instance (``__call__`` sets timesteps on the scheduler it holds) and its own seeded generators (CPU
  generators, so a seed reproduces across GPU types). The one exception is the VAE's tiling flag, set per call
  (tiled decode above ``WORKER_VAE_TILING_ABOVE_PIXELS``) under the lock that runs one generation at a time, so no
  call sees another's.
- The warm-up is small (at most 256x256, 2 steps): it proves the model end to end without paying for a full-size
  generation. Any warm-up failure but out-of-memory is ``model_load_failed``; so is a warm-up image that is NaN or
  all black (float16 overflow), since serving it would return black images.
"""

from __future__ import annotations

import copy
import inspect
import math
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage
from PIL.Image import Image

from shared.job_input import Task, task_problems
from worker.devices import is_out_of_memory
from worker.errors import ModelLoadError
from worker.model_family import defaults_for
from worker.pipeline_options import LoadReport
from worker.schemas import MAX_SEED, GenerateInput, Parameters

WARMUP_SEED = 0
WARMUP_STEPS = 2
# A multiple of 16 (FLUX-style pipelines need it), capped at the model's native size.
WARMUP_MAX_SIZE = 256


@dataclass(frozen=True)
class Generation:
    """The images of one request, with the seed of each and the time spent in the pipeline."""

    images: list[Image]
    seeds: list[int]
    inference_s: float
    parameters: Parameters


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
        self.defaults = defaults_for(pipe, model_id)
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

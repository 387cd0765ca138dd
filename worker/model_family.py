"""Model families and what a request gets for the fields it leaves out.

The family (``sd``, ``sdxl``, ``sd3``, ``flux`` or ``other``) comes from the pipeline's class; steps and guidance
are what the families' model cards recommend (few-step distillations such as turbo, lightning and schnell named by
the model id: their own steps, no guidance), and the size is the model's native resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FEW_STEP_FAMILIES = {"turbo": 1, "lightning": 4, "schnell": 4}
# (steps, guidance) by model family, as the families' model cards recommend.
FAMILY_DEFAULTS: dict[str, tuple[int, float]] = {
    "sd": (30, 7.5),
    "sdxl": (30, 5.0),
    "sd3": (28, 7.0),
    "flux": (28, 3.5),
}


@dataclass(frozen=True)
class Defaults:
    """What a request gets for the fields it leaves out."""

    num_inference_steps: int
    guidance_scale: float
    width: int
    height: int


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


def defaults_for(pipe: Any, model_id: str) -> Defaults:
    """The defaults of ``pipe``, a pipeline of ``model_id``."""
    lowered = model_id.lower()
    few_step = next((name for name in FEW_STEP_FAMILIES if name in lowered), None)
    if few_step:
        steps, guidance = FEW_STEP_FAMILIES[few_step], 0.0
    else:
        steps, guidance = FAMILY_DEFAULTS.get(family_of(pipe), (30, 7.5))
    width, height = native_size(pipe)
    return Defaults(num_inference_steps=steps, guidance_scale=guidance, width=width, height=height)


def native_size(pipe: Any) -> tuple[int, int]:
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

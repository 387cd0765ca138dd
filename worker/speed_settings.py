"""The CUDA speed settings of a loaded pipeline (none of them apply on CPU).

``channels_last`` for the denoiser and the VAE, PyTorch SDPA attention in the UNet/VAE attention blocks (the
transformer families call SDPA in their own processors), and with ``WORKER_COMPILE`` a ``torch.compile`` of the
denoiser (compiled on its first call, which the load makes: see :func:`worker.pipeline_load.load_model`). No
attention slicing: it trades speed for memory, and the GPU was chosen to fit the model. Every choice is returned
for :attr:`worker.pipeline_options.LoadReport.settings`, which ``ready`` carries.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from worker.model_family import family_of
from worker.pipeline_options import LoadOptions


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

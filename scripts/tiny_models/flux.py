"""A tiny FLUX pipeline: a FLUX transformer, a CLIP and a T5 encoder, 256x256 native."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline

from scripts.tiny_models.parts import (
    TEXT_HIDDEN,
    build_t5_encoder,
    build_t5_tokenizer,
    build_text_encoder,
    build_tokenizer,
    build_vae,
)


def build_tiny_flux(dest: Path, seed: int = 0) -> Path:
    """Save a tiny random-weight FluxPipeline (CLIP and T5 encoders; 256x256 native: FLUX's 128-latent default
    times the tiny VAE's scale factor of 2)."""
    tokenizer = build_tokenizer()
    t5_tokenizer = build_t5_tokenizer()
    torch.manual_seed(seed + 1)
    latent_channels = 4
    transformer = FluxTransformer2DModel(
        patch_size=1,
        # FLUX packs 2x2 latent patches into one token.
        in_channels=4 * latent_channels,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_HIDDEN,
        pooled_projection_dim=TEXT_HIDDEN,
        axes_dims_rope=[4, 4, 8],
    )
    components: dict[str, Any] = {
        "transformer": transformer,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "vae": build_vae(
            seed + 2, latent_channels, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609
        ),
        "text_encoder": build_text_encoder(len(tokenizer), seed),
        "tokenizer": tokenizer,
        "text_encoder_2": build_t5_encoder(len(t5_tokenizer), seed + 4),
        "tokenizer_2": t5_tokenizer,
    }
    pipeline = FluxPipeline(**components)
    dest.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(dest, safe_serialization=True)
    return dest

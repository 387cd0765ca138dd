"""A tiny Stable Diffusion 3 pipeline: an MMDiT transformer, two CLIP encoders and a T5, a 16-channel VAE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import StableDiffusion3Pipeline

from scripts.tiny_models.parts import (
    TEXT_HIDDEN,
    build_t5_encoder,
    build_t5_tokenizer,
    build_text_encoder,
    build_tokenizer,
    build_vae,
)


def build_tiny_sd3(dest: Path, seed: int = 0) -> Path:
    """Save a tiny random-weight StableDiffusion3Pipeline (two CLIP encoders and a T5, 64x64 native)."""
    tokenizer = build_tokenizer()
    t5_tokenizer = build_t5_tokenizer()
    torch.manual_seed(seed + 1)
    # 16 latent channels, as SD3's VAE: its inpainting pipeline refuses any other count.
    latent_channels = 16
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=1,
        in_channels=latent_channels,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=TEXT_HIDDEN,
        joint_attention_dim=TEXT_HIDDEN,
        pooled_projection_dim=2 * TEXT_HIDDEN,
        out_channels=latent_channels,
    )
    components: dict[str, Any] = {
        "transformer": transformer,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
        "vae": build_vae(
            seed + 2, latent_channels, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609
        ),
        "text_encoder": build_text_encoder(len(tokenizer), seed, projection=True),
        "tokenizer": tokenizer,
        "text_encoder_2": build_text_encoder(len(tokenizer), seed + 3, projection=True),
        "tokenizer_2": tokenizer,
        "text_encoder_3": build_t5_encoder(len(t5_tokenizer), seed + 4),
        "tokenizer_3": t5_tokenizer,
    }
    pipeline = StableDiffusion3Pipeline(**components)
    dest.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(dest, safe_serialization=True)
    return dest

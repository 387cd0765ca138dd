"""A tiny Stable Diffusion XL pipeline: two CLIP encoders (the second with a projection), 64x64 native."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import StableDiffusionXLPipeline

from scripts.tiny_models.parts import BLOCK_CHANNELS, TEXT_HIDDEN, build_text_encoder, build_tokenizer, build_vae


def build_tiny_sdxl(dest: Path, seed: int = 0) -> Path:
    """Save a tiny random-weight StableDiffusionXLPipeline (two CLIP encoders, 64x64 native) into ``dest``."""
    tokenizer = build_tokenizer()
    torch.manual_seed(seed + 1)
    time_embed_dim = 8
    unet = UNet2DConditionModel(
        block_out_channels=BLOCK_CHANNELS,
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        # SDXL conditions on six size numbers (each time-embedded) and the second encoder's pooled projection.
        projection_class_embeddings_input_dim=6 * time_embed_dim + TEXT_HIDDEN,
        cross_attention_dim=2 * TEXT_HIDDEN,
    )
    components: dict[str, Any] = {
        "vae": build_vae(seed + 2),
        "text_encoder": build_text_encoder(len(tokenizer), seed),
        "text_encoder_2": build_text_encoder(len(tokenizer), seed + 3, projection=True),
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer,
        "unet": unet,
        "scheduler": EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
            timestep_spacing="leading",
        ),
        "force_zeros_for_empty_prompt": True,
    }
    pipeline = StableDiffusionXLPipeline(**components)
    dest.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(dest, safe_serialization=True)
    return dest

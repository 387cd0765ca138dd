"""Tiny Stable Diffusion 1.x and SD 2.x-style (v-prediction) pipelines, a LoRA adapter for them, and the fp16
UNet variant (with a stray pickle) added to a saved pipeline."""

from __future__ import annotations

import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from scripts.tiny_models.parts import BLOCK_CHANNELS, TEXT_HIDDEN, build_text_encoder, build_tokenizer, build_vae


def build_tiny_pipeline(dest: Path, seed: int = 0, *, v_prediction: bool = False) -> Path:
    """Save a tiny random-weight StableDiffusionPipeline (64x64 native) as safetensors into ``dest``.

    Args:
        dest: Folder to write (created; existing files with the same names are overwritten).
        seed: Seed for every random weight, so the same seed gives byte-identical files.
        v_prediction: an SD 2.x-style model instead: linear-projection attention and a ``v_prediction`` scheduler.

    Returns:
        ``dest``.
    """
    tokenizer = build_tokenizer()
    text_encoder = build_text_encoder(len(tokenizer), seed)
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(
        block_out_channels=BLOCK_CHANNELS,
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=8,
        use_linear_projection=v_prediction,
    )
    vae = build_vae(seed + 2)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        prediction_type="v_prediction" if v_prediction else "epsilon",
        timestep_spacing="trailing" if v_prediction else "linspace",
    )
    # No safety checker: a random-weight model has nothing to filter, and the pipeline accepts None for both.
    components: dict[str, Any] = {
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "unet": unet,
        "scheduler": scheduler,
        "safety_checker": None,
        "feature_extractor": None,
    }
    pipeline = StableDiffusionPipeline(**components, requires_safety_checker=False)
    dest.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(dest, safe_serialization=True)
    return dest


def build_tiny_lora(base: Path, dest: Path, seed: int = 0, rank: int = 4) -> Path:
    """Save a random LoRA adapter for the UNet attention projections of the pipeline in ``base``, in diffusers'
    format (``pytorch_lora_weights.safetensors``), into ``dest``."""
    unet = UNet2DConditionModel.from_pretrained(base / "unet")
    torch.manual_seed(seed + 5)
    # init_lora_weights=False: random A and B, so the adapter changes the output (a fresh LoRA's B is zero).
    unet.add_adapter(
        LoraConfig(
            r=rank, lora_alpha=rank, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v", "to_out.0"]
        )
    )
    layers = get_peft_model_state_dict(unet)
    dest.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(dest, unet_lora_layers=layers, safe_serialization=True)
    return dest


def add_fp16_unet_and_pickle(repo: Path) -> None:
    """Add ``unet/diffusion_pytorch_model.fp16.safetensors`` (the UNet in float16) and a stray pickle,
    ``unet/diffusion_pytorch_model.bin``, to a saved tiny pipeline."""
    unet = UNet2DConditionModel.from_pretrained(repo / "unet").to(torch.float16)
    with tempfile.TemporaryDirectory() as scratch:
        unet.save_pretrained(scratch, variant="fp16", safe_serialization=True)
        shutil.copy(Path(scratch) / "diffusion_pytorch_model.fp16.safetensors", repo / "unet")
    # Not a loadable checkpoint: any fetch of it is the bug (a real pickle could run code when loaded).
    (repo / "unet" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps({"stray": "pickle"}, protocol=4))

"""Build tiny random-weight diffusers pipelines into a Hub-simulator models folder.

Usage::

    python -m scripts.build_tiny_models --out .local/hub-models

Writes the repos listed in docs/contracts.md ("Hub simulator model folder"): ``visgate-tiny/sd-tiny`` (public),
``visgate-tiny/sd-tiny-gated`` (gated ``auto``), ``visgate-tiny/sd-tiny-private`` (private) and
``visgate-tiny/text-encoder-only`` (not a pipeline), ``visgate-tiny/sd-tiny-fp16`` (the public pipeline plus an
``fp16`` variant of its UNet and a stray pickle that must never be fetched), one tiny model per family we serve
(``sd2-tiny-v``: SD 2.x-style with a v-prediction scheduler; ``sdxl-tiny``; ``sd3-tiny``; ``flux-tiny``), a LoRA
adapter for ``sd-tiny`` (``sd-tiny-lora``, and ``sd-tiny-lora-private``), their ``.hubsim.json`` files and
``<out>/.hubsim-tokens.json``.
Everything is seeded, so rebuilding gives byte-identical files (and so the same simulated commit sha). No network:
the CLIP tokenizer's byte-level BPE vocabulary is built in memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    UNet2DConditionModel,
)
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import StableDiffusion3Pipeline
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import StableDiffusionXLPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
from tokenizers import models as tokenizer_models
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
)
from transformers.models.t5.tokenization_t5 import T5Tokenizer

logger = logging.getLogger(__name__)

ORG = "visgate-tiny"
TOKENS = {"hf_tiny_accepted": "tiny-accepted", "hf_tiny_owner": "tiny-owner", "hf_tiny_other": "tiny-other"}
# Channel widths of the UNet and VAE blocks: two blocks keep the VAE scale factor at 2, so a UNet sample size of 32
# gives the 64x64 native size the tests generate at.
BLOCK_CHANNELS = (32, 64)
TEXT_HIDDEN = 32
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins that byte-level BPE uses for raw bytes (GPT-2's table)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars: list[str] = []
    extra = 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def build_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer over a byte-level vocabulary (every byte, alone and word-final) plus a few merges."""
    alphabet = _byte_alphabet()
    tokens = [BOS, EOS, *alphabet, *(f"{char}</w>" for char in alphabet)]
    # A handful of merges so that common words become single tokens, as they do with a real CLIP vocabulary.
    merges: list[tuple[str, str]] = []
    for word in ("a", "photo", "of", "cat", "the"):
        pieces = [*word[:-1], f"{word[-1]}</w>"]
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            merged = pair[0] + pair[1]
            if pair not in merges:
                merges.append(pair)
            if merged not in tokens:
                tokens.append(merged)
            pieces = [merged, *pieces[2:]]
    vocab = {token: index for index, token in enumerate(tokens)}
    # The hint says list[str], but the tokenizers BPE model it feeds takes (left, right) pairs.
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,  # type: ignore[arg-type]
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        model_max_length=77,
    )


def build_t5_tokenizer() -> T5Tokenizer:
    """A T5 tokenizer over a unigram vocabulary of printable ASCII plus a few words (no sentencepiece file)."""
    words = [(f"\u2581{word}", -1.5) for word in ("a", "photo", "of", "cat", "the")]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(chr(code), -2.0) for code in range(32, 127)] + words
    backend = Tokenizer(tokenizer_models.Unigram(pieces, unk_id=2))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return T5Tokenizer(
        tokenizer_object=backend, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0,
        model_max_length=512,
    )  # fmt: skip


def build_t5_encoder(vocab_size: int, seed: int) -> T5EncoderModel:
    """A 2-layer T5 encoder (d_model 32) with random weights."""
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=vocab_size, d_model=TEXT_HIDDEN, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    return T5EncoderModel(config).eval()


def build_text_encoder(vocab_size: int, seed: int, *, projection: bool = False) -> CLIPTextModel:
    """A 2-layer CLIP text encoder with random weights (with a text projection, as SDXL's second and SD3's)."""
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        projection_dim=TEXT_HIDDEN,
        vocab_size=vocab_size,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    if projection:
        return CLIPTextModelWithProjection(config).eval()
    return CLIPTextModel(config).eval()


def build_vae(seed: int, latent_channels: int = 4, **extra: Any) -> AutoencoderKL:
    """A two-block VAE (scale factor 2) with random weights."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=list(BLOCK_CHANNELS),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=latent_channels,
        sample_size=64,
        **extra,
    )


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


def build_text_encoder_only(dest: Path, seed: int = 0) -> Path:
    """Save a bare CLIP text encoder (config.json + model.safetensors, no model_index.json) into ``dest``."""
    text_encoder = build_text_encoder(len(build_tokenizer()), seed)
    dest.mkdir(parents=True, exist_ok=True)
    text_encoder.save_pretrained(dest, safe_serialization=True)
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


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def build_all(out: Path, seed: int = 0) -> list[str]:
    """Build every test repo of docs/contracts.md under ``out``; return their repo ids.

    The public pipeline is built once and copied, so the gated and private repos hold the same files.
    """
    out.mkdir(parents=True, exist_ok=True)
    public = out / ORG / "sd-tiny"
    if public.exists():
        shutil.rmtree(public)
    # Build into a scratch folder first so an interrupted build never leaves a half-written repo behind.
    with tempfile.TemporaryDirectory(dir=out) as scratch:
        build_tiny_pipeline(Path(scratch) / "repo", seed)
        public.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(scratch) / "repo"), public)
    repos = {
        "sd-tiny-gated": {"gated": "auto", "private": False, "authorized_tokens": ["hf_tiny_accepted"]},
        "sd-tiny-private": {"gated": False, "private": True, "authorized_tokens": ["hf_tiny_owner"]},
    }
    for name, access in repos.items():
        target = out / ORG / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(public, target)
        _write_json(target / ".hubsim.json", access)
    fp16 = out / ORG / "sd-tiny-fp16"
    if fp16.exists():
        shutil.rmtree(fp16)
    shutil.copytree(public, fp16)
    add_fp16_unet_and_pickle(fp16)
    encoder_only = out / ORG / "text-encoder-only"
    if encoder_only.exists():
        shutil.rmtree(encoder_only)
    build_text_encoder_only(encoder_only, seed)
    families = {
        "sd2-tiny-v": lambda dest: build_tiny_pipeline(dest, seed, v_prediction=True),
        "sdxl-tiny": lambda dest: build_tiny_sdxl(dest, seed),
        "sd3-tiny": lambda dest: build_tiny_sd3(dest, seed),
        "flux-tiny": lambda dest: build_tiny_flux(dest, seed),
        "sd-tiny-lora": lambda dest: build_tiny_lora(public, dest, seed),
    }
    for name, build in families.items():
        _build_fresh(out / ORG / name, build)
    lora_private = out / ORG / "sd-tiny-lora-private"
    if lora_private.exists():
        shutil.rmtree(lora_private)
    shutil.copytree(out / ORG / "sd-tiny-lora", lora_private)
    _write_json(lora_private / ".hubsim.json", repos["sd-tiny-private"])
    _write_json(out / ".hubsim-tokens.json", TOKENS)
    return [
        f"{ORG}/sd-tiny",
        *(f"{ORG}/{name}" for name in repos),
        f"{ORG}/sd-tiny-fp16",
        f"{ORG}/text-encoder-only",
        *(f"{ORG}/{name}" for name in families),
        f"{ORG}/sd-tiny-lora-private",
    ]


def _build_fresh(target: Path, build: Callable[[Path], Path]) -> None:
    """Build a repo in a scratch folder beside ``target``, then move it into place (replacing an older one)."""
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        build(Path(scratch) / "repo")
        shutil.move(str(Path(scratch) / "repo"), target)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Hub simulator models root to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for repo_id in build_all(args.out, args.seed):
        logger.info("built %s", repo_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

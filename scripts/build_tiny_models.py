"""Build tiny random-weight diffusers pipelines into a Hub-simulator models folder.

Usage::

    python -m scripts.build_tiny_models --out .local/hub-models

Writes the repos listed in docs/contracts.md ("Hub simulator model folder"): ``visgate-tiny/sd-tiny`` (public),
``visgate-tiny/sd-tiny-gated`` (gated ``auto``), ``visgate-tiny/sd-tiny-private`` (private) and
``visgate-tiny/text-encoder-only`` (not a pipeline), ``visgate-tiny/sd-tiny-fp16`` (the public pipeline plus an
``fp16`` variant of its UNet and a stray pickle that must never be fetched), their ``.hubsim.json`` files and
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
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

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


def build_text_encoder(vocab_size: int, seed: int) -> CLIPTextModel:
    """A 2-layer CLIP text encoder with random weights."""
    torch.manual_seed(seed)
    config = CLIPTextConfig(
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
    return CLIPTextModel(config).eval()


def build_tiny_pipeline(dest: Path, seed: int = 0) -> Path:
    """Save a tiny random-weight StableDiffusionPipeline (64x64 native) as safetensors into ``dest``.

    Args:
        dest: Folder to write (created; existing files with the same names are overwritten).
        seed: Seed for every random weight, so the same seed gives byte-identical files.

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
    )
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(
        block_out_channels=list(BLOCK_CHANNELS),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        sample_size=64,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, steps_offset=1
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
    _write_json(out / ".hubsim-tokens.json", TOKENS)
    return [f"{ORG}/sd-tiny", *(f"{ORG}/{name}" for name in repos), f"{ORG}/sd-tiny-fp16", f"{ORG}/text-encoder-only"]


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

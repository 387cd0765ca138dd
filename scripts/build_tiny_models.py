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
the CLIP tokenizer's byte-level BPE vocabulary is built in memory. This module says which repos exist and who may
read them; the builders, one module per model family, are in scripts/tiny_models/.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from scripts.tiny_models.flux import build_tiny_flux
from scripts.tiny_models.parts import build_text_encoder_only
from scripts.tiny_models.sd3 import build_tiny_sd3
from scripts.tiny_models.sdxl import build_tiny_sdxl
from scripts.tiny_models.stable_diffusion import add_fp16_unet_and_pickle, build_tiny_lora, build_tiny_pipeline

logger = logging.getLogger(__name__)

ORG = "visgate-tiny"
TOKENS = {"hf_tiny_accepted": "tiny-accepted", "hf_tiny_owner": "tiny-owner", "hf_tiny_other": "tiny-other"}


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

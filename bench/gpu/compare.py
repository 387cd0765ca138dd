"""Benchmark on a CUDA GPU: plain diffusers fp16 versus the worker's pipeline set-up, full-size architectures.

    .venv/bin/python -m bench.gpu [--models sd-turbo sdxl-turbo] [--runs 5] [--no-compile] [--compile-mode MODE]

Builds the full-size sd-turbo and SDXL-turbo architectures from their config files (``bench/gpu/configs/``, small
JSON kept in the repo) with random weights, so nothing is downloaded; the tokenizer is the byte-level one the tiny
test models use (the token ids fit the real vocabulary size). For 512x512, 1 and 4 steps, batch 1 and 4, it times

- ``plain``: ``pipe(...)`` of diffusers in float16 on CUDA, as its documentation shows it;
- ``ours``: the same modules after :func:`worker.speed_settings.apply_speed_settings` (``channels_last``, SDPA, and
  ``torch.compile`` of the denoiser unless ``--no-compile``), called through :meth:`LoadedModel.generate` (the
  per-request pipeline copy, CPU generators, PIL images) as a job is;

and prints p50 latency, images/s, peak VRAM and the ratio ours/plain per row (target: ours <= 0.8x plain). Both
run in one process, plain first, on the same weights. Without CUDA it refuses with a message (exit status 2);
``make bench`` then prints that it was skipped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).resolve().parent / "configs"
MODEL_IDS = {"sd-turbo": "stabilityai/sd-turbo", "sdxl-turbo": "stabilityai/sdxl-turbo"}
STEPS = (1, 4)
BATCHES = (1, 4)
SIZE = 512
PROMPT = "a photo of a cat sitting on a windowsill, golden hour"
EXIT_NO_CUDA = 2
NO_CUDA = (
    "bench.gpu: skipped: it needs a CUDA GPU and torch.cuda.is_available() is False here. "
    "Run `python -m bench.gpu` on a machine with an NVIDIA GPU (and a CUDA build of torch 2.13.0)."
)


def read_config(model: str, component: str) -> dict[str, Any]:
    """One component's config (``model_index.json`` for ``component=""``)."""
    folder = CONFIGS / model
    path = folder / "model_index.json" if not component else next((folder / component).glob("*config.json"))
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def build_components(model: str, device: str, dtype: Any) -> dict[str, Any]:
    """The pipeline components of ``model`` from the repo's configs, random weights, on ``device`` in ``dtype``."""
    import diffusers
    import torch
    import transformers

    from scripts.tiny_models.parts import build_tokenizer

    index = read_config(model, "")
    components: dict[str, Any] = {}
    torch.manual_seed(0)
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list):
            continue
        library, class_name = spec
        if class_name is None:
            components[name] = None
        elif name.startswith("tokenizer"):
            components[name] = build_tokenizer()
        elif name == "scheduler":
            components[name] = getattr(diffusers, class_name).from_config(read_config(model, name))
        elif library == "transformers":
            config = transformers.CLIPTextConfig(**read_config(model, name))
            with torch.device(device):
                components[name] = getattr(transformers, class_name)(config).to(dtype).eval()
        else:
            with torch.device(device):
                components[name] = getattr(diffusers, class_name).from_config(read_config(model, name)).to(dtype)
    return components


def build_pipeline(model: str, device: str = "cuda") -> Any:
    """The plain diffusers pipeline of ``model`` (float16) with random weights."""
    import diffusers
    import torch

    index = read_config(model, "")
    components = build_components(model, device, torch.float16)
    extra = {"requires_safety_checker": False} if "safety_checker" in components else {}
    pipe = getattr(diffusers, index["_class_name"])(**components, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _measure(run: Callable[[], Any], runs: int) -> tuple[float, float]:
    """p50 seconds of ``runs`` calls after two warm-up calls, and the peak VRAM (GiB) over them."""
    import torch

    run()
    run()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), torch.cuda.max_memory_allocated() / 1024**3


def bench_model(model: str, runs: int, compile_denoiser: bool, compile_mode: str) -> list[dict[str, Any]]:
    """Rows of the table for one model: plain then ours, for every (steps, batch)."""
    from shared.job_input import GenerateInput
    from worker.loaded_model import LoadedModel
    from worker.pipeline_options import LoadOptions
    from worker.speed_settings import apply_speed_settings

    pipe = build_pipeline(model)
    cases = [(steps, batch) for steps in STEPS for batch in BATCHES]
    plain: dict[tuple[int, int], tuple[float, float]] = {}
    for steps, batch in cases:

        def call_plain(steps: int = steps, batch: int = batch) -> Any:
            return pipe(
                PROMPT,
                num_inference_steps=steps,
                guidance_scale=0.0,
                width=SIZE,
                height=SIZE,
                num_images_per_prompt=batch,
            ).images

        plain[steps, batch] = _measure(call_plain, runs)
    options = LoadOptions(compile=compile_denoiser, compile_mode=compile_mode)
    started = time.perf_counter()
    settings = apply_speed_settings(pipe, options, on_cuda=True)
    ours_model = LoadedModel(pipe, MODEL_IDS[model], "cuda", pipe.dtype, vae_tiling_above_pixels=1024 * 1024)
    setup_s = time.perf_counter() - started
    rows = []
    for steps, batch in cases:
        request = GenerateInput(
            prompt=PROMPT, num_inference_steps=steps, guidance_scale=0.0, width=SIZE, height=SIZE, num_images=batch
        )
        ours = _measure(lambda request=request: ours_model.generate(request), runs)  # type: ignore[misc]
        base = plain[steps, batch]
        rows.append(
            {
                "model": model,
                "steps": steps,
                "batch": batch,
                "plain_p50_s": base[0],
                "ours_p50_s": ours[0],
                "plain_img_s": batch / base[0],
                "ours_img_s": batch / ours[0],
                "plain_vram_gib": base[1],
                "ours_vram_gib": ours[1],
                "ratio": ours[0] / base[0],
            }
        )
    print(f"{model}: our settings {settings} (set-up {setup_s:.1f} s; compilation happens in the warm-up calls)")
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    """The results as a Markdown table (what the README quotes)."""
    print(
        "| model | steps | batch | plain p50 (s) | ours p50 (s) | plain img/s | ours img/s | plain VRAM (GiB) "
        "| ours VRAM (GiB) | ours/plain |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {row['steps']} | {row['batch']} | {row['plain_p50_s']:.3f} | {row['ours_p50_s']:.3f} "
            f"| {row['plain_img_s']:.2f} | {row['ours_img_s']:.2f} | {row['plain_vram_gib']:.2f} "
            f"| {row['ours_vram_gib']:.2f} | {row['ratio']:.2f}x |"
        )
    worst = max(row["ratio"] for row in rows)
    print(f"target ours <= 0.8x plain: {'met' if worst <= 0.8 else 'NOT met'} (worst row {worst:.2f}x)")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 without CUDA)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODEL_IDS), default=sorted(MODEL_IDS))
    parser.add_argument("--runs", type=int, default=5, help="timed runs per case (after two warm-up runs)")
    parser.add_argument("--no-compile", action="store_true", help="ours without torch.compile (WORKER_COMPILE=false)")
    parser.add_argument("--compile-mode", default="max-autotune-no-cudagraphs")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        print("bench.gpu skipped (no CUDA)")
        return EXIT_NO_CUDA
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    rows = []
    for model in args.models:
        rows += bench_model(model, args.runs, not args.no_compile, args.compile_mode)
        torch.cuda.empty_cache()
    print_table(rows)
    return 0

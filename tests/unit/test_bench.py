"""`make bench` runs every bench to the end; bench/gpu refuses without CUDA (and `make bench` goes on), and its
config files build the full-size architectures (on the meta device)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

from bench.__main__ import BENCHES, run
from bench.gpu.compare import EXIT_NO_CUDA, build_components, main


@pytest.mark.parametrize("name", BENCHES)
def test_every_bench_of_make_bench_has_a_main(name: str) -> None:
    assert callable(getattr(importlib.import_module(name), "main", None))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip without CUDA")
def test_make_bench_says_the_gpu_bench_was_skipped_and_runs_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bench_after_gpu.py").write_text("def main(argv):\n    print('the next bench ran with', argv)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        run(("bench.gpu", "bench_after_gpu"))
    finally:
        sys.modules.pop("bench_after_gpu", None)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "",
        "=== bench.gpu ===",
        "bench.gpu skipped (no CUDA)",
        "",
        "=== bench_after_gpu ===",
        "the next bench ran with []",
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_refuses_without_cuda_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_NO_CUDA
    captured = capsys.readouterr()
    assert "it needs a CUDA GPU and torch.cuda.is_available() is False" in captured.err
    assert captured.out.strip() == "bench.gpu skipped (no CUDA)"


def _millions(module: torch.nn.Module) -> int:
    return round(sum(p.numel() for p in module.parameters()) / 1e6)


@pytest.mark.parametrize(
    ("model", "sizes"),
    [
        ("sd-turbo", {"unet": 866, "vae": 84, "text_encoder": 340}),
        ("sdxl-turbo", {"unet": 2567, "vae": 84, "text_encoder": 123, "text_encoder_2": 695}),
    ],
)
def test_the_configs_are_the_full_size_architectures(model: str, sizes: dict[str, int]) -> None:
    components = build_components(model, "meta", torch.float16)
    assert {name: _millions(components[name]) for name in sizes} == sizes

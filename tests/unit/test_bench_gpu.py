"""bench/gpu: it refuses without CUDA, and its config files build the full-size architectures (on the meta device)."""

from __future__ import annotations

import pytest
import torch

from bench.gpu.__main__ import EXIT_NO_CUDA, build_components, main


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

"""Which weight files a pipeline loads, and the VRAM estimate built on them."""

from __future__ import annotations

import pytest

from shared.errors import PermanentError
from shared.hub import _weight_files, estimate_vram_gb

INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "unet": ["diffusers", "UNet2DConditionModel"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "safety_checker": [None, None],
}


def test_half_precision_variants_win_and_components_without_weights_are_skipped() -> None:
    sizes = {
        "unet/diffusion_pytorch_model.safetensors": 10,
        "unet/diffusion_pytorch_model.fp16.safetensors": 5,
        "text_encoder/model.safetensors": 4,
        "text_encoder/model.bin": 4,
        "tokenizer/vocab.json": 1,
        "safety_checker/model.safetensors": 9,
    }

    chosen = _weight_files(INDEX, sizes, ("fp16",))

    assert sorted(chosen) == [
        ("text_encoder/model.safetensors", 4),
        ("unet/diffusion_pytorch_model.fp16.safetensors", 5),
    ]
    assert ("unet/diffusion_pytorch_model.safetensors", 10) in _weight_files(INDEX, sizes, ())


def test_pickled_weights_only_are_refused() -> None:
    with pytest.raises(PermanentError) as caught:
        _weight_files(INDEX, {"unet/diffusion_pytorch_model.bin": 10}, ("fp16",))

    assert caught.value.reason == "unsupported_model"


def test_estimate_grows_with_weights_resolution_and_precision() -> None:
    sd15 = estimate_vram_gb(2.0, 512, "float16")
    sdxl = estimate_vram_gb(6.9, 1024, "float16")

    assert 4 < sd15 < 6
    assert 13 < sdxl < 16
    assert estimate_vram_gb(2.0, 512, "float32") > sd15

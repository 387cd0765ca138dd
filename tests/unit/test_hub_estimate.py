"""Which weight files a pipeline loads, and the VRAM estimate built on them."""

from __future__ import annotations

import pytest

from shared.errors import PermanentError
from shared.hub import DTYPE_VARIANT, _variant, _weight_files, estimate_vram_gb

INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "unet": ["diffusers", "UNet2DConditionModel"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "safety_checker": [None, None],
}


def test_the_load_dtypes_variant_wins_and_components_without_weights_are_skipped() -> None:
    sizes = {
        "unet/diffusion_pytorch_model.safetensors": 10,
        "unet/diffusion_pytorch_model.fp16.safetensors": 5,
        "text_encoder/model.safetensors": 4,
        "text_encoder/model.bin": 4,
        "tokenizer/vocab.json": 1,
        "safety_checker/model.safetensors": 9,
    }

    chosen = _weight_files(INDEX, sizes, "fp16")

    assert sorted(chosen) == [
        ("text_encoder/model.safetensors", 4),
        ("unet/diffusion_pytorch_model.fp16.safetensors", 5),
    ]
    assert ("unet/diffusion_pytorch_model.safetensors", 10) in _weight_files(INDEX, sizes, None)


SHARDED = {
    "text_encoder/model-00001-of-00002.safetensors": 8,
    "text_encoder/model-00002-of-00002.safetensors": 8,
    "text_encoder/model.safetensors.index.json": 1,
    "text_encoder/model.fp16-00001-of-00002.safetensors": 4,
    "text_encoder/model.fp16-00002-of-00002.safetensors": 4,
    "text_encoder/model.safetensors.index.fp16.json": 1,
    "text_encoder/model.bf16-00001-of-00002.safetensors": 4,
    "text_encoder/model.bf16-00002-of-00002.safetensors": 4,
    "unet/diffusion_pytorch_model.safetensors": 10,
    "unet/diffusion_pytorch_model.fp16.safetensors": 5,
    "unet/diffusion_pytorch_model.bf16.safetensors": 5,
    "unet/diffusion_pytorch_model.non_ema.safetensors": 10,
}


@pytest.mark.parametrize(
    ("dtype", "text_encoder", "unet"),
    [
        (
            "float16",
            [
                "text_encoder/model.fp16-00001-of-00002.safetensors",
                "text_encoder/model.fp16-00002-of-00002.safetensors",
            ],
            ["unet/diffusion_pytorch_model.fp16.safetensors"],
        ),
        (
            "bfloat16",
            [
                "text_encoder/model.bf16-00001-of-00002.safetensors",
                "text_encoder/model.bf16-00002-of-00002.safetensors",
            ],
            ["unet/diffusion_pytorch_model.bf16.safetensors"],
        ),
        (
            "float32",
            ["text_encoder/model-00001-of-00002.safetensors", "text_encoder/model-00002-of-00002.safetensors"],
            ["unet/diffusion_pytorch_model.safetensors"],
        ),
    ],
)
def test_exactly_one_variant_per_component_sharded_ones_included(
    dtype: str, text_encoder: list[str], unet: list[str]
) -> None:
    chosen = [path for path, _ in _weight_files(INDEX, SHARDED, DTYPE_VARIANT[dtype])]

    assert sorted(chosen) == sorted(text_encoder + unet)


def test_without_the_dtypes_variant_the_plain_files_count_and_a_variant_only_component_counts_once() -> None:
    sizes = {
        "unet/diffusion_pytorch_model.safetensors": 10,
        "unet/diffusion_pytorch_model.fp16.safetensors": 5,
        "text_encoder/model.fp16.safetensors": 2,
        "text_encoder/model.bf16.safetensors": 2,
    }

    chosen = sorted(_weight_files(INDEX, sizes, "bf16"))

    assert chosen == [("text_encoder/model.bf16.safetensors", 2), ("unet/diffusion_pytorch_model.safetensors", 10)]
    assert len(_weight_files(INDEX, sizes, None)) == 2  # unet plain + one of the text encoder's two variants


def test_variant_names_follow_diffusers_and_transformers() -> None:
    assert _variant("unet/diffusion_pytorch_model.fp16.safetensors") == "fp16"
    assert _variant("text_encoder/model.fp16-00001-of-00002.safetensors") == "fp16"
    assert _variant("text_encoder/model-00001-of-00002.safetensors") is None
    assert _variant("unet/diffusion_pytorch_model.safetensors") is None


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

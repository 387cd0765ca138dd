"""The files provisioning counts (the shared rule of shared/hub_rules.py, sized), and the VRAM estimate."""

from __future__ import annotations

import pytest

from shared.deployments.hub import estimate_vram_gb, weight_files
from shared.errors import PermanentError

INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "unet": ["diffusers", "UNet2DConditionModel"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "safety_checker": [None, None],
}


def test_the_load_dtypes_weights_of_loaded_components_are_counted_without_shard_indexes() -> None:
    sizes = {
        "unet/diffusion_pytorch_model.safetensors": 10,
        "unet/diffusion_pytorch_model.fp16.safetensors": 5,
        "text_encoder/model.fp16-00001-of-00002.safetensors": 4,
        "text_encoder/model.fp16-00002-of-00002.safetensors": 4,
        "text_encoder/model.safetensors.index.fp16.json": 1,
        "text_encoder/model.safetensors": 16,
        "tokenizer/vocab.json": 1,
        "safety_checker/model.safetensors": 9,
    }

    assert sorted(weight_files(INDEX, sizes, "float16")) == [
        ("text_encoder/model.fp16-00001-of-00002.safetensors", 4),
        ("text_encoder/model.fp16-00002-of-00002.safetensors", 4),
        ("unet/diffusion_pytorch_model.fp16.safetensors", 5),
    ]
    assert sorted(weight_files(INDEX, sizes, "float32")) == [
        ("text_encoder/model.safetensors", 16),
        ("unet/diffusion_pytorch_model.safetensors", 10),
    ]


def test_a_variant_only_component_is_counted_by_the_variant_the_worker_fetches() -> None:
    sizes = {
        "unet/diffusion_pytorch_model.safetensors": 10,
        "text_encoder/model.fp16.safetensors": 2,
        "text_encoder/model.bf16.safetensors": 3,
    }

    assert sorted(weight_files(INDEX, sizes, "float32")) == [
        ("text_encoder/model.fp16.safetensors", 2),
        ("unet/diffusion_pytorch_model.safetensors", 10),
    ]


@pytest.mark.parametrize(
    "sizes",
    [
        {"unet/diffusion_pytorch_model.bin": 10},
        {"unet/diffusion_pytorch_model.fp16.safetensors": 5, "text_encoder/model.bf16.safetensors": 2},
    ],
)
def test_weights_no_worker_can_load_are_unsupported(sizes: dict[str, int]) -> None:
    with pytest.raises(PermanentError) as caught:
        weight_files(INDEX, sizes, "float16")

    assert caught.value.reason == "unsupported_model"


def test_estimate_grows_with_weights_resolution_and_precision() -> None:
    sd15 = estimate_vram_gb(2.0, 512, "float16")
    sdxl = estimate_vram_gb(6.9, 1024, "float16")

    assert 4 < sd15 < 6
    assert 13 < sdxl < 16
    assert estimate_vram_gb(2.0, 512, "float32") > sd15

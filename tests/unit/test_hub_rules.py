"""The one dtype/variant rule provisioning sizes a model by and the worker fetches and loads it by."""

from __future__ import annotations

from typing import Any

import pytest

from shared.hub_rules import (
    WeightSelectionError,
    choose_variant,
    hub_refusal,
    loaded_components,
    pipeline_weight_files,
    target_dtype,
    weight_variant,
)
from shared.lifecycle import FailureReason

SD = {"_class_name": "StableDiffusionPipeline"}
COMPONENTS = {"unet", "vae", "text_encoder", "transformer"}
PLAIN_AND_HALF: dict[str, set[str | None]] = {"unet": {None, "fp16"}, "vae": {None}, "text_encoder": {None, "fp16"}}


class TestTargetDtype:
    def test_override_then_cpu_then_the_models_preference(self) -> None:
        assert target_dtype("cuda", "float32", SD, []) == "float32"
        assert target_dtype("cpu", None, SD, []) == "float32"
        assert target_dtype("cuda", None, SD, [{}]) == "float16"
        assert target_dtype("cuda", None, SD, [{}, {"torch_dtype": "bfloat16"}]) == "bfloat16"
        assert target_dtype("cuda", None, SD, [{"dtype": "bfloat16"}]) == "bfloat16"

    def test_a_bf16_pipeline_class_decides_without_reading_configs(self) -> None:
        def configs() -> Any:
            raise AssertionError("configs read although the pipeline class decides")
            yield  # pragma: no cover

        assert target_dtype("cuda", None, {"_class_name": "SanaPipeline"}, configs()) == "bfloat16"
        assert target_dtype("cuda", None, {"_class_name": "FluxPipeline"}, configs()) == "bfloat16"


class TestVariantChoice:
    @pytest.mark.parametrize(
        ("dtype", "variants", "expected"),
        [
            ("float16", PLAIN_AND_HALF, "fp16"),
            ("float32", PLAIN_AND_HALF, None),
            ("bfloat16", PLAIN_AND_HALF, None),  # no bf16 weights: the plain ones, cast on load
            ("bfloat16", {"transformer": {None, "bf16", "fp16"}, "vae": {None}}, "bf16"),
            ("float16", {"transformer": {"bf16"}, "vae": {None}}, "bf16"),  # a component with variant files only
            ("float32", {"unet": {"fp16", "bf16"}, "vae": {None}}, "fp16"),
            ("float32", {}, None),
        ],
    )
    def test_choice(self, dtype: str, variants: dict[str, set[str | None]], expected: str | None) -> None:
        assert choose_variant(dtype, variants) == expected

    def test_no_single_variant_loads_both(self) -> None:
        with pytest.raises(WeightSelectionError, match="different weight variants"):
            choose_variant("float32", {"unet": {"fp16"}, "vae": {"bf16"}})


class TestPipelineWeightFiles:
    def test_safetensors_of_components_only_never_pickles_nested_exports_or_root_checkpoints(self) -> None:
        paths = [
            "model_index.json",
            "v1-5-pruned.safetensors",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.bin",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "unet/onnx/model.safetensors",
            "text_encoder/model.safetensors",
            "text_encoder/pytorch_model.bin",
            "safety_checker/model.safetensors",  # [None, None] in model_index.json: not loaded
            "tokenizer/vocab.json",
        ]
        assert pipeline_weight_files(paths, "float32", COMPONENTS) == [
            "text_encoder/model.safetensors",
            "unet/diffusion_pytorch_model.safetensors",
        ]
        assert pipeline_weight_files(paths, "float16", COMPONENTS) == [
            "text_encoder/model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
        ]

    @pytest.mark.parametrize(("dtype", "variant"), [("float16", "fp16"), ("bfloat16", "bf16"), ("float32", None)])
    def test_exactly_one_variant_per_component_sharded_ones_with_their_index(
        self, dtype: str, variant: str | None
    ) -> None:
        paths = [
            "text_encoder/model-00001-of-00002.safetensors",
            "text_encoder/model-00002-of-00002.safetensors",
            "text_encoder/model.safetensors.index.json",
            "text_encoder/model.fp16-00001-of-00002.safetensors",
            "text_encoder/model.fp16-00002-of-00002.safetensors",
            "text_encoder/model.safetensors.index.fp16.json",
            "text_encoder/model.bf16-00001-of-00002.safetensors",
            "text_encoder/model.bf16-00002-of-00002.safetensors",
            "text_encoder/model.safetensors.index.bf16.json",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "unet/diffusion_pytorch_model.bf16.safetensors",
            "unet/diffusion_pytorch_model.non_ema.safetensors",
        ]
        chosen = pipeline_weight_files(paths, dtype, COMPONENTS)

        assert {weight_variant(path.rsplit("/", 1)[1])[1] for path in chosen} == {variant}
        assert len([p for p in chosen if p.startswith("text_encoder/")]) == 3  # two shards and their index
        assert len([p for p in chosen if p.startswith("unet/")]) == 1

    def test_a_variant_only_component_sets_the_variant_fp16_first(self) -> None:
        # Provisioning used to count such a component by its bf16 files while the worker fetched fp16 ones.
        paths = ["text_encoder/model.fp16.safetensors", "text_encoder/model.bf16.safetensors", "vae/model.safetensors"]
        assert pipeline_weight_files(paths, "float32", COMPONENTS) == [
            "text_encoder/model.fp16.safetensors",
            "vae/model.safetensors",
        ]

    def test_a_bf16_only_component_is_loaded_at_every_dtype(self) -> None:
        paths = [
            "transformer/diffusion_pytorch_model.bf16.safetensors",
            "vae/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.bin",
        ]
        for dtype in ("float16", "bfloat16", "float32"):
            assert pipeline_weight_files(paths, dtype, COMPONENTS) == [
                "transformer/diffusion_pytorch_model.bf16.safetensors",
                "vae/diffusion_pytorch_model.safetensors",
            ]

    def test_pickles_only_or_no_common_variant_are_refused(self) -> None:
        with pytest.raises(WeightSelectionError, match="pickled"):
            pipeline_weight_files(["unet/diffusion_pytorch_model.bin"], "float32", COMPONENTS)
        with pytest.raises(WeightSelectionError, match="different weight variants"):
            pipeline_weight_files(["unet/a.fp16.safetensors", "vae/a.bf16.safetensors"], "float32", COMPONENTS)


def test_loaded_components_are_the_named_classes() -> None:
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.31.0",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "safety_checker": [None, None],
        "feature_extractor": ["transformers", None],
    }
    assert loaded_components(index) == {"unet"}


def test_variant_names_follow_diffusers_and_transformers() -> None:
    assert weight_variant("diffusion_pytorch_model.fp16.safetensors") == (True, "fp16")
    assert weight_variant("model.fp16-00001-of-00002.safetensors") == (True, "fp16")
    assert weight_variant("model-00001-of-00002.safetensors") == (True, None)
    assert weight_variant("model.safetensors.index.bf16.json") == (True, "bf16")
    assert weight_variant("config.json") == (False, None)


def test_hub_refusals_are_failure_reasons() -> None:
    assert hub_refusal(401, "Invalid credentials in Authorization header") == FailureReason.HF_TOKEN_INVALID
    assert hub_refusal(401, None) == FailureReason.MODEL_GATED
    assert hub_refusal(403, "Access to model is restricted") == FailureReason.MODEL_GATED
    assert hub_refusal(404, None) is None
    assert hub_refusal(None, None) is None

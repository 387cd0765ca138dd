"""What a model can do, LoRA file choice, the create request's task and loras, and the shared job input."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from huggingface_hub.errors import HfHubHTTPError
from pydantic import ValidationError

from shared.deployments.hub import SUPPORTED_PIPELINES, HubInspector
from shared.errors import PermanentError, RetryableError
from shared.job_input import GenerateInput, image_kind, task_problems
from shared.model_tasks import (
    PIPELINE_TASKS,
    LoraSpec,
    ResolvedLora,
    _http_failure,
    check_loras,
    check_task,
    choose_lora_weight,
    loras_env,
    resolve_loras,
    supported_tasks,
    tasks_of_index,
)
from shared.models import CreateDeploymentRequest

SD_COMPONENTS = {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}


@pytest.mark.parametrize(
    ("pipeline", "tasks"),
    [
        ("StableDiffusionPipeline", {"text_to_image", "image_to_image", "inpainting"}),
        ("StableDiffusionXLPipeline", {"text_to_image", "image_to_image", "inpainting"}),
        ("StableDiffusion3Pipeline", {"text_to_image", "image_to_image", "inpainting"}),
        ("FluxPipeline", {"text_to_image", "image_to_image", "inpainting"}),
        ("LatentConsistencyModelPipeline", {"text_to_image", "image_to_image"}),
        ("PixArtSigmaPipeline", {"text_to_image"}),
        ("KandinskyPipeline", set()),
    ],
)
def test_supported_tasks(pipeline: str, tasks: set[str]) -> None:
    assert supported_tasks(pipeline, SD_COMPONENTS) == tasks


def test_every_served_pipeline_has_its_tasks() -> None:
    assert set(PIPELINE_TASKS) == set(SUPPORTED_PIPELINES)


def test_image_tasks_need_a_vae() -> None:
    assert supported_tasks("StableDiffusionPipeline", SD_COMPONENTS - {"vae"}) == {"text_to_image"}


def test_tasks_of_index_reads_the_loaded_components() -> None:
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "U"], "vae": [None, None]}
    assert tasks_of_index(index) == {"text_to_image"}


def test_check_task_names_what_the_model_can_do() -> None:
    check_task("inpainting", "FluxPipeline", SD_COMPONENTS, "org/flux")
    with pytest.raises(PermanentError) as raised:
        check_task("inpainting", "LatentConsistencyModelPipeline", SD_COMPONENTS, "org/lcm")
    assert raised.value.reason == "unsupported_model"
    assert str(raised.value).endswith("cannot do inpainting; it can do: text_to_image, image_to_image")


def test_check_loras() -> None:
    check_loras([object()], "StableDiffusionXLPipeline", "org/m")
    check_loras([], "PixArtSigmaPipeline", "org/m")
    with pytest.raises(PermanentError, match="takes no LoRA adapters"):
        check_loras([object()], "PixArtSigmaPipeline", "org/m")


@pytest.mark.parametrize(
    ("paths", "weight_name", "chosen"),
    [
        (["pytorch_lora_weights.safetensors", "README.md"], None, "pytorch_lora_weights.safetensors"),
        (["style.safetensors"], None, "style.safetensors"),
        (["a.safetensors", "pytorch_lora_weights.safetensors"], None, "pytorch_lora_weights.safetensors"),
        (["a.safetensors", "b.safetensors"], "b.safetensors", "b.safetensors"),
        (["sub/x.safetensors", "x.safetensors"], "sub/x.safetensors", "sub/x.safetensors"),
    ],
)
def test_choose_lora_weight(paths: list[str], weight_name: str | None, chosen: str) -> None:
    assert choose_lora_weight("org/lora", paths, weight_name) == chosen


@pytest.mark.parametrize(
    ("paths", "weight_name", "message"),
    [
        (["a.safetensors", "b.safetensors"], None, "several safetensors files (a.safetensors, b.safetensors)"),
        (["adapter.bin"], None, "no safetensors weights (pickled weights are refused)"),
        (["README.md"], None, "no safetensors weights"),
        (["a.safetensors"], "b.safetensors", "has no b.safetensors"),
    ],
)
def test_choose_lora_weight_refusals(paths: list[str], weight_name: str | None, message: str) -> None:
    with pytest.raises(PermanentError, match=message.replace("(", r"\(").replace(")", r"\)")) as raised:
        choose_lora_weight("org/lora", paths, weight_name)
    assert raised.value.reason == "unsupported_model"


def test_loras_env_is_the_json_the_worker_reads() -> None:
    lora = ResolvedLora(hf_model_id="org/lora", revision="a" * 40, weight_name="w.safetensors", scale=0.5)
    assert json.loads(loras_env([lora])) == [
        {"hf_model_id": "org/lora", "revision": "a" * 40, "weight_name": "w.safetensors", "scale": 0.5}
    ]


def _create(**fields: Any) -> CreateDeploymentRequest:
    return CreateDeploymentRequest.model_validate({"hf_model_id": "org/model", **fields})


def test_create_request_task_and_loras() -> None:
    request = _create()
    assert (request.task, request.loras) == ("text_to_image", [])
    request = _create(task="inpainting", loras=[{"hf_model_id": "org/lora", "scale": 0.25}])
    assert request.loras[0].model_dump() == {
        "hf_model_id": "org/lora",
        "revision": "main",
        "weight_name": None,
        "scale": 0.25,
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"task": "video"}, "task"),
        ({"loras": [{"hf_model_id": "org/l"}] * 5}, "List should have at most 4 items"),
        ({"loras": [{"hf_model_id": "no-org"}]}, "loras.0.hf_model_id"),
        ({"loras": [{"hf_model_id": "org/a--b"}]}, "must not contain '..' or '--'"),
        ({"loras": [{"hf_model_id": "org/l", "scale": 5}]}, "loras.0.scale"),
        ({"loras": [{"hf_model_id": "org/l", "scale": "1"}]}, "loras.0.scale"),
        ({"loras": [{"hf_model_id": "org/l", "weight_name": "w.bin"}]}, "loras.0.weight_name"),
        ({"loras": [{"hf_model_id": "org/l", "weight_name": "../w.safetensors"}]}, "loras.0.weight_name"),
        ({"loras": [{"hf_model_id": "org/l", "extra": 1}]}, "Extra inputs are not permitted"),
        # A trailing newline (Python's "$" matches before it; issue 18): whole strings only.
        ({"loras": [{"hf_model_id": "org/l\n"}]}, "loras.0.hf_model_id"),
        ({"loras": [{"hf_model_id": "org/l", "revision": "main\n"}]}, "loras.0.revision"),
        ({"loras": [{"hf_model_id": "org/l", "weight_name": "w.safetensors\n"}]}, "loras.0.weight_name"),
        ({"hf_model_id": "org/m\n"}, "hf_model_id"),
        ({"revision": "main\n"}, "revision"),
    ],
)
def test_create_request_refuses_bad_task_and_loras(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _create(**fields)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("data:image/png;base64,iVBORw0KGgo=", "data_url"),
        ("data:image/webp;charset=x;base64,AAAA", "data_url"),
        ("iVBORw0KGgo=", "base64"),
        ("iVBO\nRw0K Ggo=", "base64"),
        ("https://example.com/a.png", "url"),
        ("HTTPS://example.com/a.png", "url"),
    ],
)
def test_image_kind(value: str, kind: str) -> None:
    assert image_kind(value) == kind


@pytest.mark.parametrize(
    "value", ["data:text/plain;base64,AAAA", "http://example.com/a.png", "ftp://x/y", "not base64!", "   ", "data:,x"]
)
def test_image_kind_refusals(value: str) -> None:
    with pytest.raises(ValueError, match="must"):
        image_kind(value)


def test_task_problems() -> None:
    image = "data:image/png;base64,AAAA"
    plain = GenerateInput(prompt="a")
    assert task_problems(plain, "text_to_image") == []
    assert task_problems(plain, "image_to_image") == ["image: required by an image_to_image deployment"]
    assert task_problems(plain, "inpainting") == [
        "image: required by an inpainting deployment",
        "mask_image: required by an inpainting deployment",
    ]
    both = GenerateInput(prompt="a", image=image, mask_image=image, strength=0.5)
    assert task_problems(both, "inpainting") == []
    assert task_problems(both, "text_to_image") == [
        "image: not taken by a text_to_image deployment",
        "mask_image: not taken by a text_to_image deployment",
        "strength: not taken by a text_to_image deployment",
    ]
    with pytest.raises(ValidationError, match="mask_image needs an image"):
        GenerateInput(prompt="a", mask_image=image)


@pytest.mark.parametrize(
    ("status", "message", "reason"),
    [
        (401, "Invalid credentials in Authorization header", "hf_token_invalid"),
        (403, "no", "model_gated"),
        (404, "no", "model_not_found"),
    ],
)
def test_hub_refusals_of_a_lora_map_to_reasons(status: int, message: str, reason: str) -> None:
    response = httpx.Response(status, headers={"X-Error-Message": message}, request=httpx.Request("GET", "http://h"))
    failure = _http_failure(HfHubHTTPError("refused", response=response), "LoRA org/l@main")
    assert isinstance(failure, PermanentError)
    assert failure.reason == reason


def test_a_failing_hub_is_retried() -> None:
    response = httpx.Response(502, request=httpx.Request("GET", "http://h"))
    assert isinstance(_http_failure(HfHubHTTPError("bad", response=response), "LoRA org/l@main"), RetryableError)


def test_an_unreachable_hub_is_retryable() -> None:
    with pytest.raises(RetryableError, match="unreachable"):
        resolve_loras("http://127.0.0.1:9", 2, [LoraSpec(hf_model_id="org/lora")], None)


@pytest.mark.parametrize("hf_model_id", ["org/lora\n", "org/lo ra"])
def test_a_hub_validation_error_of_a_lora_is_a_permanent_failure_with_its_reason(hf_model_id: str) -> None:
    """An id the Hub client refuses before asking (one stored before a check was strict) fails the deployment."""
    spec = LoraSpec.model_construct(hf_model_id=hf_model_id, revision="main", weight_name=None, scale=1.0)
    with pytest.raises(PermanentError) as caught:
        resolve_loras("http://127.0.0.1:9", 2, [spec], None)
    assert caught.value.reason == "model_not_found"
    assert "is no valid Hub id: Repo id must use alphanumeric chars" in caught.value.message
    assert "\n" not in caught.value.message


def test_a_hub_validation_error_of_the_model_is_a_permanent_failure_with_its_reason() -> None:
    with pytest.raises(PermanentError) as caught:
        HubInspector("http://127.0.0.1:9", 2, None).inspect("org/model\n", "main", None)
    assert caught.value.reason == "model_not_found"
    assert caught.value.message.startswith("org/model @main is no valid Hub id: Repo id must use")


def test_a_resolved_lora_revision_is_a_whole_commit_sha() -> None:
    with pytest.raises(ValidationError, match="revision"):
        ResolvedLora(hf_model_id="org/l", revision="a" * 40 + "\n", weight_name="w.safetensors")

"""LoRA adapters: fetched from the Hub simulator with the verified fetch, fused at their scales before the warm-up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi

from shared.model_tasks import ResolvedLora, loras_env
from tests.worker.conftest import PUBLIC, Callback
from tests.worker.test_tasks import decode
from worker.errors import ModelLoadError, ModelNotFoundError
from worker.handler import make_handler
from worker.hub_client import HubClient
from worker.loaded_model import LoadedModel
from worker.main import start_up
from worker.model_fetch import fetch_lora
from worker.pipeline_load import load_model
from worker.pipeline_options import LoadOptions, LoraWeights
from worker.reporter import PhaseReporter
from worker.settings import WorkerSettings

LORA, LORA_PRIVATE = "visgate-tiny/sd-tiny-lora", "visgate-tiny/sd-tiny-lora-private"
WEIGHTS = "pytorch_lora_weights.safetensors"
JOB = {"id": "j", "input": {"prompt": "a photo of a cat", "num_inference_steps": 2, "seed": 11}}


@pytest.fixture(scope="module")
def lora_sha(hub_url: str) -> str:
    return str(HfApi(endpoint=hub_url).model_info(LORA).sha)


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory: pytest.TempPathFactory, hub_url: str, lora_sha: str) -> Path:
    return fetch_lora(LORA, lora_sha, WEIGHTS, tmp_path_factory.mktemp("loras"), HubClient(hub_url, None))


def _model(models_root: Path, *loras: LoraWeights) -> LoadedModel:
    return load_model(models_root / PUBLIC, PUBLIC, "cpu", torch.float32, LoadOptions(loras=loras))


def _image(model: LoadedModel) -> np.ndarray:
    result = make_handler(model)(JOB)
    assert "error" not in result, result
    return decode(result["images"][0]).astype(int)


def test_a_lora_changes_the_image_and_scale_zero_does_not(models_root: Path, lora_file: Path, lora_sha: str) -> None:
    plain = _image(_model(models_root))
    fused = _model(models_root, LoraWeights(LORA, lora_sha, lora_file, 1.0))
    assert np.abs(_image(fused) - plain).max() > 10
    assert fused.report.loras == [{"hf_model_id": LORA, "revision": lora_sha, "weight_name": WEIGHTS, "scale": 1.0}]
    assert fused.report.lora_s > 0
    # Fused, then unloaded: the weights changed, no adapter layer is left behind.
    assert not any("lora" in name for name, _ in fused.pipe.unet.named_modules())
    zero = _model(models_root, LoraWeights(LORA, lora_sha, lora_file, 0.0))
    assert np.array_equal(_image(zero), plain)
    half = _model(models_root, LoraWeights(LORA, lora_sha, lora_file, 0.5))
    assert not np.array_equal(_image(half), _image(fused))


def test_two_adapters_fuse_together(models_root: Path, lora_file: Path, lora_sha: str) -> None:
    both = _model(models_root, LoraWeights(LORA, lora_sha, lora_file, 0.5), LoraWeights(LORA, lora_sha, lora_file, 0.5))
    one = _model(models_root, LoraWeights(LORA, lora_sha, lora_file, 1.0))
    assert np.abs(_image(both) - _image(one)).max() <= 2


def test_an_adapter_that_does_not_fit_is_a_load_failure(models_root: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    bogus = tmp_path / WEIGHTS
    save_file({"unet.nothing.lora_A.weight": torch.zeros(2, 2)}, str(bogus))
    with pytest.raises(ModelLoadError, match=f"LoRA {LORA}@0000000000"):
        _model(models_root, LoraWeights(LORA, "0" * 40, bogus, 1.0))


def test_the_fetch_is_verified_and_reused(tmp_path: Path, hub_url: str, lora_sha: str) -> None:
    hub = HubClient(hub_url, None)
    path = fetch_lora(LORA, lora_sha, WEIGHTS, tmp_path, hub)
    assert path == tmp_path / "loras" / "visgate-tiny--sd-tiny-lora" / lora_sha / WEIGHTS
    assert fetch_lora(LORA, lora_sha, WEIGHTS, tmp_path, HubClient("http://127.0.0.1:9", None)) == path
    with pytest.raises(ModelNotFoundError, match=r"has no other\.safetensors"):
        fetch_lora(LORA, lora_sha, "other.safetensors", tmp_path / "b", hub)
    with pytest.raises(ModelLoadError, match="not a safetensors file"):
        fetch_lora(LORA, lora_sha, "adapter.bin", tmp_path / "c", hub)


def test_a_private_adapter_needs_its_token(tmp_path: Path, hub_url: str) -> None:
    sha = str(HfApi(endpoint=hub_url, token="hf_tiny_owner").model_info(LORA_PRIVATE).sha)
    with pytest.raises(ModelNotFoundError):
        fetch_lora(LORA_PRIVATE, sha, WEIGHTS, tmp_path, HubClient(hub_url, "hf_tiny_other"))
    assert fetch_lora(LORA_PRIVATE, sha, WEIGHTS, tmp_path, HubClient(hub_url, "hf_tiny_owner")).is_file()


def test_start_up_fetches_fuses_and_reports_the_adapters(
    tmp_path: Path, hub_url: str, hub_revisions: dict[str, str], lora_sha: str, callback: Callback
) -> None:
    """WORKER_LORAS as provisioning writes it (shared.model_tasks.loras_env) drives the start-up."""
    env: dict[str, Any] = {
        "hf_model_id": PUBLIC,
        "hf_model_revision": hub_revisions[PUBLIC],
        "hf_endpoint": hub_url,
        "worker_model_dir": tmp_path,
        "worker_task": "image_to_image",
        "worker_loras": json.loads(loras_env([ResolvedLora(hf_model_id=LORA, revision=lora_sha, weight_name=WEIGHTS)])),
    }
    settings = WorkerSettings(**env)
    reporter = PhaseReporter("dep-1", callback.url, callback.secret, sleep=lambda _: None)
    model, _, timings = start_up(settings, reporter)
    assert type(model.pipe).__name__ == "StableDiffusionImg2ImgPipeline"
    assert model.report.settings["task"] == "image_to_image"
    assert model.report.loras[0]["revision"] == lora_sha
    assert timings.warmup_s > 0


def test_worker_loras_is_parsed_from_the_environment(monkeypatch: pytest.MonkeyPatch, lora_sha: str) -> None:
    monkeypatch.setenv("HF_MODEL_ID", PUBLIC)
    monkeypatch.setenv("HF_MODEL_REVISION", "0" * 40)
    monkeypatch.setenv("WORKER_TASK", "inpainting")
    monkeypatch.setenv(
        "WORKER_LORAS", loras_env([ResolvedLora(hf_model_id=LORA, revision=lora_sha, weight_name=WEIGHTS, scale=0.7)])
    )
    settings = WorkerSettings()  # type: ignore[call-arg]
    assert settings.worker_task == "inpainting"
    assert [(lora.hf_model_id, lora.scale) for lora in settings.worker_loras] == [(LORA, 0.7)]
    monkeypatch.setenv("WORKER_LORAS", json.dumps([{"hf_model_id": LORA, "revision": "main", "weight_name": WEIGHTS}]))
    with pytest.raises(ValueError, match="revision"):
        WorkerSettings()  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "field",
    [
        {"hf_model_id": "org/lora\n"},
        {"revision": "a" * 40 + "\n"},
        {"weight_name": "pytorch_lora_weights.safetensors\n"},
    ],
)
def test_a_worker_lora_setting_must_match_whole(field: dict[str, str]) -> None:
    """Python's engine (for the look-ahead) lets "$" match before a final newline; the whole value must match."""
    from pydantic import ValidationError

    from worker.settings import LoraSetting

    good = {"hf_model_id": "org/lora", "revision": "a" * 40, "weight_name": "pytorch_lora_weights.safetensors"}
    assert LoraSetting.model_validate(good).hf_model_id == "org/lora"
    with pytest.raises(ValidationError, match=next(iter(field))):
        LoraSetting.model_validate(good | field)

"""The tasks (text-to-image, image-to-image, inpainting) and the model families, through the real worker code.

Each family's tiny model is fetched from the Hub simulator (the verified fetch), loaded for each task it has,
warmed up, and serves a job through the handler; its defaults and its VRAM estimate are checked too.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi
from PIL import Image

from shared.deployments.hub import HubInspector
from shared.job_input import Task
from tests.worker.conftest import PUBLIC
from worker.devices import resolve_dtype
from worker.handler import make_handler
from worker.hub_client import HubClient
from worker.loaded_model import LoadedModel
from worker.model_fetch import FetchRequest, fetch_model
from worker.pipeline_load import load_model
from worker.pipeline_options import LoadOptions
from worker.speed_settings import apply_speed_settings
from worker.task_pipeline import task_pipeline

SD2, SDXL, SD3, FLUX = (
    "visgate-tiny/sd2-tiny-v",
    "visgate-tiny/sdxl-tiny",
    "visgate-tiny/sd3-tiny",
    "visgate-tiny/flux-tiny",
)
ALL_TASKS: tuple[Task, ...] = ("text_to_image", "image_to_image", "inpainting")
# family: (repo, pipeline class per task, (steps, guidance, width, height), VRAM estimate in GB)
FAMILIES: dict[str, tuple[str, dict[str, str], tuple[int, float, int, int], float]] = {
    "sd": (
        PUBLIC,
        {
            "text_to_image": "StableDiffusionPipeline",
            "image_to_image": "StableDiffusionImg2ImgPipeline",
            "inpainting": "StableDiffusionInpaintPipeline",
        },
        (30, 7.5, 64, 64),
        2.5,
    ),
    "sd2-v": (
        SD2,
        {
            "text_to_image": "StableDiffusionPipeline",
            "image_to_image": "StableDiffusionImg2ImgPipeline",
            "inpainting": "StableDiffusionInpaintPipeline",
        },
        (30, 7.5, 64, 64),
        2.5,
    ),
    "sdxl": (
        SDXL,
        {
            "text_to_image": "StableDiffusionXLPipeline",
            "image_to_image": "StableDiffusionXLImg2ImgPipeline",
            "inpainting": "StableDiffusionXLInpaintPipeline",
        },
        (30, 5.0, 64, 64),
        7.0,
    ),
    "sd3": (
        SD3,
        {
            "text_to_image": "StableDiffusion3Pipeline",
            "image_to_image": "StableDiffusion3Img2ImgPipeline",
            "inpainting": "StableDiffusion3InpaintPipeline",
        },
        (28, 7.0, 64, 64),
        7.0,
    ),
    "flux": (
        FLUX,
        {
            "text_to_image": "FluxPipeline",
            "image_to_image": "FluxImg2ImgPipeline",
            "inpainting": "FluxInpaintPipeline",
        },
        # FLUX's default latent size (128) times the tiny VAE's scale factor (2).
        (28, 3.5, 256, 256),
        7.0,
    ),
}


def data_url(image: Image.Image, image_format: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    mime = "image/png" if image_format == "PNG" else f"image/{image_format.lower()}"
    return f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode()


def sample_image(width: int = 64, height: int = 64, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def sample_mask(width: int = 64, height: int = 64) -> Image.Image:
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    return mask


def decode(item: dict[str, Any]) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(item["image"]))))


def job_for(task: Task, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"prompt": "a photo of a cat", "num_inference_steps": 2, "seed": 5, **extra}
    if task != "text_to_image":
        payload["image"] = data_url(sample_image(80, 72))
        payload.setdefault("strength", 0.8)
    if task == "inpainting":
        payload["mask_image"] = data_url(sample_mask(80, 72))
    return {"id": "job-t", "input": payload}


@pytest.fixture(scope="module")
def fetched_families(tmp_path_factory: pytest.TempPathFactory, hub_url: str) -> dict[str, Path]:
    """Each family's tiny model, fetched from the Hub simulator into a local folder (once)."""
    root = tmp_path_factory.mktemp("family-models")
    api = HfApi(endpoint=hub_url)
    folders = {}
    for family, (repo, *_) in FAMILIES.items():
        request = FetchRequest(model_id=repo, revision=str(api.model_info(repo).sha), model_dir=root)
        folders[family] = fetch_model(request, HubClient(hub_url, None), None).path
    return folders


def _load(folder: Path, repo: str, task: Task = "text_to_image", **options: Any) -> LoadedModel:
    return load_model(folder, repo, "cpu", resolve_dtype("cpu", None, folder), LoadOptions(task=task, **options))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_serves_each_of_its_tasks(family: str, fetched_families: dict[str, Path]) -> None:
    repo, classes, _, _ = FAMILIES[family]
    size = {"width": 64, "height": 64}
    for task in ALL_TASKS:
        model = _load(fetched_families[family], repo, task)
        assert type(model.pipe).__name__ == classes[task]
        assert model.warm_up() > 0
        result = make_handler(model)(job_for(task, **size))
        assert "error" not in result, result
        pixels = decode(result["images"][0])
        assert pixels.shape == (64, 64, 3)
        assert pixels.std() > 0
        assert result["images"][0]["seed"] == 5
        if task == "text_to_image":
            assert "strength" not in result["parameters"]
        else:
            assert 0 < result["parameters"]["strength"] <= 1


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_defaults(family: str, fetched_families: dict[str, Path]) -> None:
    repo, _, (steps, guidance, width, height), _ = FAMILIES[family]
    defaults = _load(fetched_families[family], repo).defaults
    assert (defaults.num_inference_steps, defaults.guidance_scale, defaults.width, defaults.height) == (
        steps,
        guidance,
        width,
        height,
    )


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_vram_estimate(family: str, hub_url: str) -> None:
    repo, _, _, estimate = FAMILIES[family]
    report = HubInspector(hub_url, 10, None).inspect(repo, "main", None)
    assert report.pipeline_class == FAMILIES[family][1]["text_to_image"]
    # Tiny weights: the estimate is the CUDA context plus the activations at the family's native resolution.
    assert report.vram_estimate_gb == estimate
    assert report.dtype == ("bfloat16" if family == "flux" else "float16")


def test_sd2_keeps_its_v_prediction_scheduler(fetched_families: dict[str, Path]) -> None:
    model = _load(fetched_families["sd2-v"], SD2, "image_to_image")
    assert model.pipe.scheduler.config.prediction_type == "v_prediction"
    assert model.pipe.scheduler.config.timestep_spacing == "trailing"


def test_task_pipelines_share_the_loaded_weights(fetched_families: dict[str, Path]) -> None:
    base = _load(fetched_families["sd"], PUBLIC).pipe
    for task in ("image_to_image", "inpainting"):
        derived = task_pipeline(base, task, PUBLIC)  # type: ignore[arg-type]
        for name in ("unet", "vae", "text_encoder", "tokenizer"):
            assert getattr(derived, name) is getattr(base, name)


def test_same_seed_and_image_give_the_same_result(fetched_families: dict[str, Path]) -> None:
    handler = make_handler(_load(fetched_families["sd"], PUBLIC, "image_to_image"))
    first, second = handler(job_for("image_to_image", strength=0.7)), handler(job_for("image_to_image", strength=0.7))
    assert np.array_equal(decode(first["images"][0]), decode(second["images"][0]))
    assert first["parameters"]["strength"] == 0.7
    other = handler(job_for("image_to_image", strength=1.0))
    assert not np.array_equal(decode(first["images"][0]), decode(other["images"][0]))


def test_too_few_steps_for_the_strength_fail_the_job(fetched_families: dict[str, Path]) -> None:
    handler = make_handler(_load(fetched_families["sd"], PUBLIC, "image_to_image"))
    result = handler(job_for("image_to_image", strength=0.2, num_inference_steps=2))
    assert result["error"].startswith("invalid input: num_inference_steps: 2 steps at strength 0.2")


def test_inpainting_keeps_the_unmasked_region_closer(fetched_families: dict[str, Path]) -> None:
    model = _load(fetched_families["sd"], PUBLIC, "inpainting")
    source = sample_image(64, 64, seed=3)
    result = make_handler(model)(
        {
            "id": "j",
            "input": {
                "prompt": "a cat",
                "num_inference_steps": 2,
                "seed": 1,
                "image": data_url(source),
                "mask_image": data_url(sample_mask()),
            },
        }
    )
    assert "error" not in result
    assert decode(result["images"][0]).shape == (64, 64, 3)


def test_the_speed_settings_apply_on_cuda_only(fetched_families: dict[str, Path], monkeypatch: Any) -> None:
    model = _load(fetched_families["sd"], PUBLIC)
    assert model.report.settings["channels_last"] is False
    assert model.report.settings["compile"] is False
    compiled: list[dict[str, Any]] = []
    monkeypatch.setattr(type(model.pipe.unet), "compile", lambda self, **kwargs: compiled.append(kwargs))
    options = LoadOptions(compile=True, compile_mode="max-autotune-no-cudagraphs")
    settings = apply_speed_settings(model.pipe, options, on_cuda=True)
    assert settings == {
        "task": "text_to_image",
        "family": "sd",
        "channels_last": True,
        "sdpa": True,
        "compile": True,
        "compile_mode": "max-autotune-no-cudagraphs",
        "vae_tiling_above_pixels": 1024 * 1024,
    }
    assert compiled == [{"mode": "max-autotune-no-cudagraphs", "fullgraph": False}]
    assert model.pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert {type(p).__name__ for p in model.pipe.unet.attn_processors.values()} == {"AttnProcessor2_0"}
    apply_speed_settings(model.pipe, LoadOptions(sdpa=False, channels_last=False), on_cuda=True)
    assert {type(p).__name__ for p in model.pipe.vae.attn_processors.values()} == {"AttnProcessor"}


def test_vae_tiling_is_used_above_the_threshold_only(fetched_families: dict[str, Path], monkeypatch: Any) -> None:
    model = _load(fetched_families["sd"], PUBLIC, vae_tiling_above_pixels=64 * 64)
    seen: list[bool] = []
    real = type(model.pipe.vae).decode

    def spy(vae: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(vae.use_tiling)
        return real(vae, *args, **kwargs)

    monkeypatch.setattr(type(model.pipe.vae), "decode", spy)
    handler = make_handler(model)
    handler({"id": "a", "input": {"prompt": "a", "num_inference_steps": 1, "width": 64, "height": 64}})
    handler({"id": "b", "input": {"prompt": "a", "num_inference_steps": 1, "width": 72, "height": 64}})
    assert seen == [False, True]

"""Job input validation, the handler's output shapes, and real tiny-model generation on CPU."""

from __future__ import annotations

import base64
import io
import re
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import requests
import torch
from diffusers import AutoPipelineForText2Image
from PIL import Image
from pydantic import ValidationError

from tests.worker.conftest import FP16, PUBLIC
from worker.devices import resolve_device, resolve_dtype
from worker.errors import ModelLoadError
from worker.handler import make_handler
from worker.hub_client import HubClient
from worker.loaded_model import LoadedModel
from worker.model_fetch import FetchRequest, fetch_model
from worker.output import OutputBucket, OutputBuckets, region_from_endpoint
from worker.pipeline_load import load_model
from worker.schemas import GenerateInput, S3Config
from worker.settings import PRESIGNED_URL_MAX_S, WorkerSettings


@pytest.fixture(scope="session")
def model(models_root: Path) -> LoadedModel:
    """The tiny public pipeline loaded once, on CPU in float32."""
    model_dir = models_root / PUBLIC
    return load_model(model_dir, PUBLIC, "cpu", resolve_dtype("cpu", None, model_dir))


def _job(payload: Any, **extra: Any) -> dict[str, Any]:
    return {"id": "job-1", "input": payload, **extra}


def _decode(item: dict[str, Any]) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(item["image"]))))


BAD_INPUTS = [
    ({}, "prompt: Field required"),
    ({"prompt": ""}, "prompt: String should have at least 1 character"),
    ({"prompt": "x" * 2001}, "prompt: String should have at most 2000 characters"),
    ({"prompt": "a", "num_inference_steps": 0}, "num_inference_steps"),
    ({"prompt": "a", "num_inference_steps": 101}, "num_inference_steps"),
    ({"prompt": "a", "guidance_scale": 31}, "guidance_scale"),
    ({"prompt": "a", "guidance_scale": -1}, "guidance_scale"),
    ({"prompt": "a", "width": 100}, "width: Input should be a multiple of 8"),
    ({"prompt": "a", "height": 56}, "height: Input should be greater than or equal to 64"),
    ({"prompt": "a", "width": 2056}, "width"),
    ({"prompt": "a", "num_images": 5}, "num_images"),
    ({"prompt": "a", "seed": -1}, "seed"),
    ({"prompt": "a", "seed": 2**32}, "seed: Input should be less than or equal to 4294967295"),
    ({"prompt": " \n\t"}, "prompt: Value error, must not be blank"),
    ({"prompt": "a", "num_images": True}, "num_images: Input should be a valid integer"),
    ({"prompt": "a", "num_images": "4"}, "num_images: Input should be a valid integer"),
    ({"prompt": "a", "num_images": 1.0}, "num_images: Input should be a valid integer"),
    ({"prompt": "a", "width": "512"}, "width: Input should be a valid integer"),
    ({"prompt": "a", "guidance_scale": "7"}, "guidance_scale: Input should be a valid number"),
    ({"prompt": 5}, "prompt: Input should be a valid string"),
    ({"warmup": 1}, "warmup"),
    ({"prompt": "a", "output_format": "gif"}, "output_format"),
    ({"prompt": "a", "steps": 4}, "steps: Extra inputs are not permitted"),
    ({"warmup": False}, "warmup"),
    ({"warmup": True, "prompt": "a"}, "prompt: Extra inputs are not permitted"),
    ("a prompt", "must be a JSON object"),
]


class TestValidation:
    @pytest.mark.parametrize(("payload", "message"), BAD_INPUTS)
    def test_bad_input_fails_the_job(self, model: LoadedModel, payload: Any, message: str) -> None:
        result = make_handler(model)(_job(payload))
        assert set(result) == {"error"}
        assert result["error"].startswith("invalid input: ")
        assert message in result["error"]

    def test_defaults(self) -> None:
        request = GenerateInput(prompt="a")
        assert (request.num_images, request.output_format, request.seed) == (1, "png", None)

    def test_integral_guidance_and_largest_seed_are_accepted(self) -> None:
        request = GenerateInput.model_validate({"prompt": "a", "guidance_scale": 7, "seed": 2**32 - 1})
        assert (request.guidance_scale, request.seed) == (7.0, 2**32 - 1)

    def test_warmup(self, model: LoadedModel) -> None:
        assert make_handler(model)(_job({"warmup": True})) == {"warmup": True}

    def test_bad_s3_config(self, model: LoadedModel) -> None:
        result = make_handler(model)(_job({"prompt": "a"}, s3Config={"accessId": "x"}))
        assert "bucketName: Field required" in result["error"]


class TestGeneration:
    def test_same_seed_same_image(self, model: LoadedModel) -> None:
        handler = make_handler(model)
        payload = {"prompt": "a photo of a cat", "num_inference_steps": 2, "seed": 1234}
        first, second = handler(_job(payload)), handler(_job(payload))
        assert "error" not in first
        assert first["images"][0]["seed"] == 1234
        pixels = _decode(first["images"][0])
        assert pixels.shape == (64, 64, 3)
        assert np.array_equal(pixels, _decode(second["images"][0]))
        assert first["model"] == PUBLIC
        assert first["parameters"] == {
            "prompt": "a photo of a cat",
            "num_inference_steps": 2,
            "guidance_scale": 7.5,
            "width": 64,
            "height": 64,
            "num_images": 1,
            "output_format": "png",
        }
        assert first["timings"]["inference_s"] > 0
        assert pixels.std() > 0  # not a blank image

    def test_several_images_each_with_its_seed(self, model: LoadedModel) -> None:
        result = make_handler(model)(_job({"prompt": "a cat", "num_inference_steps": 2, "num_images": 2, "seed": 7}))
        assert [item["seed"] for item in result["images"]] == [7, 8]
        # The second image alone, from its returned seed, is the same picture (reproducible per image).
        alone = make_handler(model)(
            _job({"prompt": "a cat", "num_inference_steps": 2, "seed": 8, "output_format": "png"})
        )
        assert np.abs(_decode(result["images"][1]).astype(int) - _decode(alone["images"][0]).astype(int)).max() <= 1

    @pytest.mark.parametrize(("output_format", "pil_format"), [("jpeg", "JPEG"), ("webp", "WEBP"), ("png", "PNG")])
    def test_output_formats(self, model: LoadedModel, output_format: str, pil_format: str) -> None:
        result = make_handler(model)(_job({"prompt": "a", "num_inference_steps": 1, "output_format": output_format}))
        assert Image.open(io.BytesIO(base64.b64decode(result["images"][0]["image"]))).format == pil_format

    def test_random_seed_is_returned(self, model: LoadedModel) -> None:
        result = make_handler(model)(_job({"prompt": "a", "num_inference_steps": 1, "width": 72, "height": 64}))
        assert isinstance(result["images"][0]["seed"], int)
        assert _decode(result["images"][0]).shape == (64, 72, 3)

    def test_shared_pipeline_is_not_mutated(self, model: LoadedModel) -> None:
        scheduler = model.pipe.scheduler
        config = dict(scheduler.config)
        make_handler(model)(_job({"prompt": "a", "num_inference_steps": 3, "seed": 1, "output_format": "webp"}))
        assert model.pipe.scheduler is scheduler
        assert dict(scheduler.config) == config
        assert scheduler.num_inference_steps is None  # never had set_timesteps called

    def test_warm_up(self, model: LoadedModel) -> None:
        assert model.warm_up() > 0

    def test_random_seeds_fit_32_bits(self, model: LoadedModel) -> None:
        result = make_handler(model)(_job({"prompt": "a", "num_inference_steps": 1, "num_images": 4}))
        assert all(0 <= item["seed"] <= 2**32 - 1 for item in result["images"])

    def test_presigned_urls_with_s3_config(self, model: LoadedModel, s3_endpoint: str, s3_client: Any) -> None:
        s3_client.create_bucket(Bucket="outputs")
        s3_config = {"accessId": "a", "accessSecret": "b", "bucketName": "outputs", "endpointUrl": s3_endpoint}
        result = make_handler(model)(_job({"prompt": "a", "num_inference_steps": 1, "seed": 3}, s3Config=s3_config))
        url = result["images"][0]["url"]
        assert "image" not in result["images"][0]
        assert urlsplit(url).path.startswith("/outputs/job-1/")
        assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == [str(PRESIGNED_URL_MAX_S)]
        response = requests.get(url, timeout=10)
        assert response.status_code == 200
        assert Image.open(io.BytesIO(response.content)).size == (64, 64)

    def test_presigned_urls_with_bucket_env(self, model: LoadedModel, s3_client: Any) -> None:
        s3_client.create_bucket(Bucket="env-outputs")
        env_bucket = OutputBucket(client=s3_client, bucket="env-outputs", url_expiry_s=60)
        handler = make_handler(model, OutputBuckets(job_key_prefix="images", env_bucket=env_bucket))
        result = handler(_job({"prompt": "a", "num_inference_steps": 1}))
        url = result["images"][0]["url"]
        assert urlsplit(url).path.startswith("/env-outputs/job-1/")  # the s3Config prefix is not the env bucket's
        assert requests.get(url, timeout=10).status_code == 200


def _s3_config(bucket: str, endpoint_url: str) -> S3Config:
    return S3Config.model_validate(
        {"accessId": "a", "accessSecret": "b", "bucketName": bucket, "endpointUrl": endpoint_url}
    )


def _worker_settings(**env: Any) -> WorkerSettings:
    return WorkerSettings(hf_model_id=PUBLIC, hf_model_revision="0" * 40, **env)


class TestOutputKeysAndExpiry:
    """``OUTPUT_S3_PREFIX`` and ``OUTPUT_URL_EXPIRY_S``: where a job's s3Config bucket gets its images, for how long."""

    def test_keys_go_under_the_prefix_and_urls_live_as_long_as_set(self, s3_endpoint: str, s3_client: Any) -> None:
        s3_client.create_bucket(Bucket="prefixed-outputs")
        s3_config = _s3_config("prefixed-outputs", s3_endpoint)
        outputs = OutputBuckets.from_settings(
            _worker_settings(output_s3_prefix="tenant/images", output_url_expiry_s=3600)
        )
        bucket = outputs.for_job(s3_config)
        assert bucket is not None

        url = bucket.upload("job-7", b"png bytes", "png")

        parts = urlsplit(url)
        assert re.fullmatch(r"/prefixed-outputs/tenant/images/job-7/[0-9a-f]{12}\.png", parts.path)
        assert parse_qs(parts.query)["X-Amz-Expires"] == ["3600"]
        assert requests.get(url, timeout=10).content == b"png bytes"

    def test_without_a_prefix_keys_start_with_the_job_id(self, s3_endpoint: str, s3_client: Any) -> None:
        s3_client.create_bucket(Bucket="plain-outputs")
        s3_config = _s3_config("plain-outputs", s3_endpoint)
        bucket = OutputBuckets.from_settings(_worker_settings()).for_job(s3_config)
        assert bucket is not None

        parts = urlsplit(bucket.upload("job-8", b"webp bytes", "webp"))

        assert re.fullmatch(r"/plain-outputs/job-8/[0-9a-f]{12}\.webp", parts.path)
        assert parse_qs(parts.query)["X-Amz-Expires"] == [str(PRESIGNED_URL_MAX_S)]

    def test_the_env_bucket_takes_the_expiry_but_not_the_prefix(self) -> None:
        settings = _worker_settings(
            bucket_endpoint_url="https://s3.eu-west-3.amazonaws.com",
            bucket_access_key_id="a",
            bucket_secret_access_key="b",
            output_s3_prefix="images",
            output_url_expiry_s=120,
        )

        env_bucket = OutputBuckets.from_settings(settings).for_job(None)

        assert env_bucket is not None
        assert (env_bucket.key_prefix, env_bucket.url_expiry_s) == ("", 120)

    @pytest.mark.parametrize(
        "env",
        [
            {"output_s3_prefix": "/images"},
            {"output_s3_prefix": "images/"},
            {"output_url_expiry_s": 0},
            {"output_url_expiry_s": PRESIGNED_URL_MAX_S + 1},
        ],
    )
    def test_a_prefix_with_an_outer_slash_or_an_expiry_past_sigv4s_is_refused(self, env: dict[str, Any]) -> None:
        with pytest.raises(ValidationError):
            _worker_settings(**env)


class TestDeviceAndDtype:
    def test_cpu_defaults_to_float32(self, models_root: Path) -> None:
        assert resolve_dtype("cpu", None, models_root / PUBLIC) == torch.float32

    def test_overrides_win(self, models_root: Path) -> None:
        assert resolve_dtype("cpu", "bfloat16", models_root / PUBLIC) == torch.bfloat16
        assert resolve_device("cpu") == "cpu"

    def test_cuda_prefers_the_models_dtype(self, tmp_path: Path) -> None:
        (tmp_path / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
        assert resolve_dtype("cuda", None, tmp_path) == torch.bfloat16
        (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
        assert resolve_dtype("cuda", None, tmp_path) == torch.float16


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_defaults_to_half_precision_and_generates(models_root: Path) -> None:
    model_dir = models_root / PUBLIC
    device = resolve_device(None)
    dtype = resolve_dtype(device, None, model_dir)
    assert (device, dtype) == ("cuda", torch.float16)
    model = load_model(model_dir, PUBLIC, device, dtype)
    result = make_handler(model)(_job({"prompt": "a cat", "num_inference_steps": 2, "seed": 1}))
    assert _decode(result["images"][0]).shape == (64, 64, 3)


class TestWarmUpAndLoadFailures:
    @pytest.fixture
    def own_model(self, models_root: Path) -> LoadedModel:
        """A pipeline of its own, free to break."""
        return load_model(models_root / PUBLIC, PUBLIC, "cpu", torch.float32)

    def test_warm_up_is_small(self, own_model: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
        calls: list[dict[str, Any]] = []
        real = type(own_model.pipe).__call__

        def spy(pipe: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(kwargs)
            return real(pipe, *args, **kwargs)

        monkeypatch.setattr(type(own_model.pipe), "__call__", spy)
        own_model.defaults = replace(own_model.defaults, width=1024, height=768)
        own_model.warm_up()
        assert (calls[0]["width"], calls[0]["height"], calls[0]["num_inference_steps"]) == (256, 256, 2)

    @pytest.mark.parametrize(("value", "message"), [(float("nan"), "NaN"), (-1000.0, "all black")])
    def test_nan_or_black_warm_up_image_is_a_load_failure(
        self, own_model: LoadedModel, value: float, message: str
    ) -> None:
        with torch.no_grad():
            conv_out = own_model.pipe.vae.decoder.conv_out
            conv_out.weight.zero_()
            conv_out.bias.fill_(value)
        with pytest.raises(ModelLoadError, match=message):
            own_model.warm_up()

    def test_other_warm_up_errors_are_load_failures(self, own_model: LoadedModel) -> None:
        own_model.pipe.unet.forward = _raise(RuntimeError("expected scalar type Half but found Float"))
        with pytest.raises(ModelLoadError, match="warm-up inference failed: RuntimeError"):
            own_model.warm_up()

    def test_out_of_memory_in_warm_up_stays_out_of_memory(self, own_model: LoadedModel) -> None:
        own_model.pipe.unet.forward = _raise(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
        with pytest.raises(RuntimeError, match="out of memory"):
            own_model.warm_up()

    @pytest.mark.parametrize(
        "error",
        [
            ImportError("cannot import name 'FancyUNet'"),
            RuntimeError("Error(s) in loading state_dict: size mismatch for conv_in.weight"),
            TypeError("__init__() got an unexpected keyword argument 'foo'"),
        ],
    )
    def test_any_load_error_is_a_load_failure(
        self, models_root: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
    ) -> None:
        monkeypatch.setattr(AutoPipelineForText2Image, "from_pretrained", _raise(error))
        with pytest.raises(ModelLoadError, match=type(error).__name__):
            load_model(models_root / PUBLIC, PUBLIC, "cpu", torch.float32)

    def test_out_of_memory_on_load_stays_out_of_memory(
        self, models_root: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(AutoPipelineForText2Image, "from_pretrained", _raise(torch.cuda.OutOfMemoryError("oom")))
        with pytest.raises(torch.cuda.OutOfMemoryError):
            load_model(models_root / PUBLIC, PUBLIC, "cpu", torch.float32)


def _raise(error: Exception) -> Any:
    def raiser(*_: Any, **__: Any) -> Any:
        raise error

    return raiser


class TestVariantEndToEnd:
    """A Hub repo with an fp16 UNet variant and a stray pickle: what is fetched, and that it loads."""

    def test_cpu_fetches_the_plain_weights_and_never_the_pickle(
        self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str]
    ) -> None:
        request = FetchRequest(model_id=FP16, revision=hub_revisions[FP16], model_dir=tmp_path, device="cpu")
        fetched = fetch_model(request, HubClient(hub_url, None), None)
        unet_files = sorted(path.name for path in (fetched.path / "unet").iterdir())
        assert unet_files == ["config.json", "diffusion_pytorch_model.safetensors"]
        model = load_model(fetched.path, FP16, "cpu", resolve_dtype("cpu", None, fetched.path))
        assert model.warm_up() > 0

    def test_the_fp16_variant_is_fetched_for_float16_and_loads(
        self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str]
    ) -> None:
        request = FetchRequest(
            model_id=FP16, revision=hub_revisions[FP16], model_dir=tmp_path, device="cuda", dtype="float16"
        )
        fetched = fetch_model(request, HubClient(hub_url, None), None)
        unet_files = sorted(path.name for path in (fetched.path / "unet").iterdir())
        assert unet_files == ["config.json", "diffusion_pytorch_model.fp16.safetensors"]
        assert not list(fetched.path.rglob("*.bin"))
        # On CPU in float32 the folder's only UNet weights are the fp16 variant: the loader must ask for it.
        model = load_model(fetched.path, FP16, "cpu", torch.float32)
        assert model.pipe.unet.dtype == torch.float32
        result = make_handler(model)(_job({"prompt": "a cat", "num_inference_steps": 2, "seed": 3}))
        assert _decode(result["images"][0]).std() > 0


class TestOutputRegion:
    @pytest.mark.parametrize(
        ("url", "region"),
        [
            ("https://s3.eu-west-3.amazonaws.com", "eu-west-3"),
            ("https://my-bucket.s3.us-west-2.amazonaws.com", "us-west-2"),
            ("https://s3-ap-south-1.amazonaws.com", "ap-south-1"),
            ("https://s3.us-west-004.backblazeb2.com", "us-west-004"),
            ("https://nyc3.digitaloceanspaces.com", "nyc3"),
            ("https://0123abcd.r2.cloudflarestorage.com", "auto"),
            ("https://s3.amazonaws.com", None),
            ("http://127.0.0.1:9000", None),
            (None, None),
        ],
    )
    def test_region_from_endpoint(self, url: str | None, region: str | None) -> None:
        assert region_from_endpoint(url) == region

    def test_bucket_client_signs_for_the_derived_or_configured_region(self) -> None:
        s3_config = S3Config.model_validate(
            {
                "accessId": "a",
                "accessSecret": "b",
                "bucketName": "o",
                "endpointUrl": "https://s3.eu-west-3.amazonaws.com",
            }
        )
        job_bucket = OutputBuckets().for_job(s3_config)
        assert job_bucket is not None
        assert job_bucket.client.meta.region_name == "eu-west-3"
        env = {
            "hf_model_id": PUBLIC,
            "hf_model_revision": "0" * 40,
            "bucket_endpoint_url": "https://nyc3.digitaloceanspaces.com",
            "bucket_access_key_id": "a",
            "bucket_secret_access_key": "b",
        }
        bucket = OutputBucket.from_settings(WorkerSettings(**env))
        assert bucket is not None
        assert bucket.client.meta.region_name == "nyc3"
        configured = OutputBucket.from_settings(WorkerSettings(**env, bucket_region="sfo3"))
        assert configured is not None
        assert configured.client.meta.region_name == "sfo3"

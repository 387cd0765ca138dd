"""Model fetch: file and variant selection, Hub, S3 cache hit, miss-then-populate, a bad cache copy falls back to
the Hub, the shared scope through a grant."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import requests

from shared.cache_layout import MANIFEST_NAME, Manifest
from shared.signing import new_secret
from tests.worker.conftest import FP16, GATED, NOT_A_PIPELINE, PRIVATE, PUBLIC, Callback
from worker.bake import main as bake_main
from worker.cache import S3ModelCache, _S3Objects
from worker.cache_download import ModelDownloader, sha256_file
from worker.cache_grant import PresignedObjects, SharedCacheGrant
from worker.errors import CacheIntegrityError, HfTokenInvalidError, ModelGatedError, ModelLoadError, ModelNotFoundError
from worker.fetch_plan import pipeline_config_files, pipeline_weight_files
from worker.hub_client import HubClient
from worker.model_fetch import FetchRequest, fetch_model
from worker.populate_cache import build_parser, populate
from worker.variants import folder_dtype


def _request(model_dir: Path, model_id: str, revision: str, scope: str = "off", **extra: Any) -> FetchRequest:
    return FetchRequest(model_id=model_id, revision=revision, model_dir=model_dir, scope=scope, **extra)  # type: ignore[arg-type]


def _repo_files(models_root: Path, model_id: str) -> dict[str, str]:
    repo = models_root / model_id
    return {
        str(path.relative_to(repo)): sha256_file(path)
        for path in repo.rglob("*")
        if path.is_file() and path.name != ".hubsim.json"
    }


class TestPipelineConfigFiles:
    def test_configs_and_tokenizer_files_of_component_folders_only(self) -> None:
        paths = [
            "model_index.json",
            "README.md",
            "v1-5-pruned.ckpt",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.safetensors.index.json",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "scheduler/scheduler_config.json",
            "unet/onnx/config.json",
        ]
        assert pipeline_config_files(paths) == [
            "model_index.json",
            "scheduler/scheduler_config.json",
            "tokenizer/merges.txt",
            "tokenizer/vocab.json",
            "unet/config.json",
        ]

    def test_not_a_pipeline(self) -> None:
        with pytest.raises(ModelLoadError, match=r"model_index\.json"):
            pipeline_config_files(["config.json", "model.safetensors"])


def test_weights_the_worker_cannot_load_fail_the_load(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text('{"unet": ["diffusers", "UNet2DConditionModel"]}')
    with pytest.raises(ModelLoadError, match="pickled"):
        pipeline_weight_files(["model_index.json", "unet/diffusion_pytorch_model.bin"], "float16", tmp_path)
    # Only the components model_index.json names are fetched.
    paths = ["model_index.json", "unet/diffusion_pytorch_model.safetensors", "safety_checker/model.safetensors"]
    assert pipeline_weight_files(paths, "float16", tmp_path) == ["unet/diffusion_pytorch_model.safetensors"]


def test_folder_dtype_reads_the_configs_on_disk(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    assert folder_dtype("cuda", None, tmp_path) == "float16"
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text('{"torch_dtype": "bfloat16"}')
    assert folder_dtype("cuda", None, tmp_path) == "bfloat16"


class TestHubFetch:
    def test_public_model_from_hub(
        self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str], models_root: Path
    ) -> None:
        progress: list[tuple[int, int]] = []
        result = fetch_model(
            _request(tmp_path, PUBLIC, hub_revisions[PUBLIC]),
            HubClient(hub_url, token=None),
            cache=None,
            progress=lambda done, total: progress.append((done, total)),
        )
        assert result.source == "hub"
        assert not result.loaded_from_cache
        expected = _repo_files(models_root, PUBLIC)
        assert {item.path: item.sha256 for item in result.manifest.files} == expected
        for path, digest in expected.items():
            assert sha256_file(result.path / path) == digest
        assert progress[-1][0] == progress[-1][1] == result.manifest.total_bytes
        assert all(done <= total for done, total in progress)
        assert not list(tmp_path.glob(".partial-*"))
        # A second start on the same volume reuses the verified local copy.
        again = fetch_model(_request(tmp_path, PUBLIC, hub_revisions[PUBLIC]), HubClient(hub_url, None), None)
        assert again.source == "local"

    def test_gated_without_access(self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str]) -> None:
        request = _request(tmp_path, GATED, hub_revisions[GATED])
        with pytest.raises(ModelGatedError):
            fetch_model(request, HubClient(hub_url, token="hf_tiny_other"), None)
        assert fetch_model(request, HubClient(hub_url, token="hf_tiny_accepted"), None).source == "hub"

    def test_an_invalid_token_is_its_own_reason_as_in_provisioning(
        self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str]
    ) -> None:
        request = _request(tmp_path, PUBLIC, hub_revisions[PUBLIC])
        with pytest.raises(HfTokenInvalidError) as caught:
            fetch_model(request, HubClient(hub_url, token="hf_expired_or_made_up"), None)
        assert caught.value.reason == "hf_token_invalid"

    def test_private_is_not_found_for_others(self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str]) -> None:
        with pytest.raises(ModelNotFoundError):
            fetch_model(_request(tmp_path, PRIVATE, hub_revisions[PRIVATE]), HubClient(hub_url, "hf_tiny_other"), None)

    def test_unknown_revision(self, tmp_path: Path, hub_url: str) -> None:
        with pytest.raises(ModelNotFoundError):
            fetch_model(_request(tmp_path, PUBLIC, "0" * 40), HubClient(hub_url, None), None)

    def test_not_a_pipeline(self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str]) -> None:
        request = _request(tmp_path, NOT_A_PIPELINE, hub_revisions[NOT_A_PIPELINE])
        with pytest.raises(ModelLoadError, match=r"model_index\.json"):
            fetch_model(request, HubClient(hub_url, None), None)


@pytest.fixture
def s3(cache: S3ModelCache, s3_client: Any) -> tuple[S3ModelCache, Any]:
    return cache, s3_client


class TestPrivateCache:
    def test_miss_then_populate_then_hit(
        self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str], cache: S3ModelCache, s3_client: Any
    ) -> None:
        revision = hub_revisions[PRIVATE]
        hub = HubClient(hub_url, token="hf_tiny_owner")
        first = fetch_model(_request(tmp_path / "a", PRIVATE, revision, "private"), hub, cache)
        assert first.source == "hub"
        manifest = cache.read_manifest(PRIVATE, revision)
        assert manifest is not None
        assert manifest.files == first.manifest.files
        assert manifest.gated is False
        key = cache.key(PRIVATE, revision, MANIFEST_NAME)
        assert key == f"models/visgate-tiny--sd-tiny-private/{revision}/manifest.json"
        body = json.loads(s3_client.get_object(Bucket=cache.location.bucket, Key=key)["Body"].read())
        assert set(body) == {"model_id", "revision", "gated", "files"}

        progress: list[tuple[int, int]] = []
        second = fetch_model(
            _request(tmp_path / "b", PRIVATE, revision, "private"),
            HubClient(hub_url, token="hf_tiny_other"),  # proves no Hub read: this token cannot see the repo
            cache,
            progress=lambda done, total: progress.append((done, total)),
        )
        assert second.source == "cache"
        assert second.loaded_from_cache
        for item in manifest.files:
            assert sha256_file(second.path / item.path) == item.sha256
        assert progress[-1] == (manifest.total_bytes, manifest.total_bytes)
        assert all(done <= total for done, total in progress)

    @staticmethod
    def _cached(tmp_path: Path, hub_url: str, revision: str, cache: S3ModelCache) -> tuple[Manifest, HubClient]:
        hub = HubClient(hub_url, token=None)
        fetch_model(_request(tmp_path / "a", PUBLIC, revision, "private"), hub, cache)
        manifest = cache.read_manifest(PUBLIC, revision)
        assert manifest is not None
        return manifest, hub

    @staticmethod
    def _assert_repaired(tmp_path: Path, cache: S3ModelCache, s3_client: Any, revision: str, result: Any) -> None:
        """The start fell back to the Hub, loaded nothing partial, and put a good copy back in the cache."""
        assert result.source == "hub"
        assert not list((tmp_path / "b").glob(".partial-*"))
        repaired = cache.read_manifest(PUBLIC, revision)
        assert repaired is not None
        for item in repaired.files:
            body = s3_client.get_object(Bucket=cache.location.bucket, Key=cache.key(PUBLIC, revision, item.path))
            assert hashlib.sha256(body["Body"].read()).hexdigest() == item.sha256
            assert sha256_file(result.path / item.path) == item.sha256

    def test_tampered_file_falls_back_to_the_hub_and_repairs_the_cache(
        self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str], cache: S3ModelCache, s3_client: Any
    ) -> None:
        revision = hub_revisions[PUBLIC]
        manifest, hub = self._cached(tmp_path, hub_url, revision, cache)
        victim = max(manifest.files, key=lambda item: item.size)  # several ranged parts
        key = cache.key(PUBLIC, revision, victim.path)
        data = bytearray(s3_client.get_object(Bucket=cache.location.bucket, Key=key)["Body"].read())
        data[len(data) // 2] ^= 0xFF
        s3_client.put_object(Bucket=cache.location.bucket, Key=key, Body=bytes(data))

        result = fetch_model(_request(tmp_path / "b", PUBLIC, revision, "private"), hub, cache)
        self._assert_repaired(tmp_path, cache, s3_client, revision, result)
        assert fetch_model(_request(tmp_path / "c", PUBLIC, revision, "private"), hub, cache).source == "cache"

    def test_truncated_file_falls_back(
        self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str], cache: S3ModelCache, s3_client: Any
    ) -> None:
        revision = hub_revisions[PUBLIC]
        manifest, hub = self._cached(tmp_path, hub_url, revision, cache)
        victim = max(manifest.files, key=lambda item: item.size)
        s3_client.put_object(Bucket=cache.location.bucket, Key=cache.key(PUBLIC, revision, victim.path), Body=b"short")
        result = fetch_model(_request(tmp_path / "b", PUBLIC, revision, "private"), hub, cache)
        self._assert_repaired(tmp_path, cache, s3_client, revision, result)

    def test_missing_object_falls_back(
        self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str], cache: S3ModelCache, s3_client: Any
    ) -> None:
        revision = hub_revisions[PUBLIC]
        manifest, hub = self._cached(tmp_path, hub_url, revision, cache)
        victim = max(manifest.files, key=lambda item: item.size)
        s3_client.delete_object(Bucket=cache.location.bucket, Key=cache.key(PUBLIC, revision, victim.path))
        result = fetch_model(_request(tmp_path / "b", PUBLIC, revision, "private"), hub, cache)
        self._assert_repaired(tmp_path, cache, s3_client, revision, result)

    @pytest.mark.parametrize("body", [b"{not json", b'{"model_id": "x"}', b'{"files": "nope"}'])
    def test_corrupt_manifest_falls_back(
        self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str], s3: tuple[S3ModelCache, Any], body: bytes
    ) -> None:
        cache, s3_client = s3
        revision = hub_revisions[PUBLIC]
        _, hub = self._cached(tmp_path, hub_url, revision, cache)
        s3_client.put_object(Bucket=cache.location.bucket, Key=cache.key(PUBLIC, revision, MANIFEST_NAME), Body=body)
        with pytest.raises(CacheIntegrityError, match="corrupt"):
            cache.read_manifest(PUBLIC, revision)
        result = fetch_model(_request(tmp_path / "b", PUBLIC, revision, "private"), hub, cache)
        self._assert_repaired(tmp_path, cache, s3_client, revision, result)

    def test_a_failing_part_is_retried(self, tmp_path: Path, models_root: Path, cache: S3ModelCache) -> None:
        manifest = _manifest_of(models_root, PUBLIC, "1" * 40)
        cache.upload(manifest, models_root / PUBLIC)
        objects = _S3Objects(cache._client, cache.location.bucket, lambda path: cache.key(PUBLIC, "1" * 40, path))
        failed: set[tuple[str, int]] = set()

        class FirstTryFails:
            def read_range(self, path: str, start: int, stop: int) -> Any:
                if (path, start) not in failed:
                    failed.add((path, start))
                    total, chunks = objects.read_range(path, start, stop)
                    return total, _broken_after_one_chunk(chunks)
                return objects.read_range(path, start, stop)

        ModelDownloader(FirstTryFails(), concurrency=4, part_size=256 * 1024, retry_backoff_s=0).download(
            manifest, tmp_path
        )
        for item in manifest.files:
            assert sha256_file(tmp_path / item.path) == item.sha256
        assert len(failed) > len(manifest.files)  # several parts per large file, each failed once

    def test_cache_never_hands_out_pickles(
        self, tmp_path: Path, hub_url: str, cache: S3ModelCache, models_root: Path
    ) -> None:
        manifest = _manifest_of(models_root, FP16, "2" * 40)
        assert "unet/diffusion_pytorch_model.bin" in {item.path for item in manifest.files}
        cache.upload(manifest, models_root / FP16)
        result = fetch_model(
            _request(tmp_path, FP16, "2" * 40, "private"), HubClient("http://127.0.0.1:9", None), cache
        )
        assert result.source == "cache"
        fetched = {item.path for item in result.manifest.files}
        assert "unet/diffusion_pytorch_model.bin" not in fetched
        assert not (result.path / "unet" / "diffusion_pytorch_model.bin").exists()
        # CPU: float32, so the plain UNet weights, not the fp16 variant.
        assert "unet/diffusion_pytorch_model.safetensors" in fetched
        assert "unet/diffusion_pytorch_model.fp16.safetensors" not in fetched


def _broken_after_one_chunk(chunks: Any) -> Any:
    yield next(iter(chunks))
    raise ConnectionError("connection reset by peer")


def _manifest_of(models_root: Path, model_id: str, revision: str, gated: bool = False) -> Manifest:
    files = _repo_files(models_root, model_id)
    return Manifest(
        model_id=model_id,
        revision=revision,
        gated=gated,
        files=[
            {"path": path, "size": (models_root / model_id / path).stat().st_size, "sha256": digest}
            for path, digest in sorted(files.items())
        ],
    )


class TestSharedScope:
    """The worker's side of the grant; the callback function's side runs in tests/integration."""

    def test_refused_grant_falls_back_to_the_hub(
        self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str], callback: Callback
    ) -> None:
        callback.answers = [403]
        grant = SharedCacheGrant(callback.url, "dep-1", callback.secret)
        request = _request(tmp_path, PUBLIC, hub_revisions[PUBLIC], "shared")
        assert fetch_model(request, HubClient(hub_url, None), grant).source == "hub"
        assert len(callback.message_ids) == 1  # one signed request, verified by the receiver

    def test_not_cached_is_a_miss(
        self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str], callback: Callback
    ) -> None:
        callback.answers = [404]
        grant = SharedCacheGrant(callback.url, "dep-1", callback.secret)
        assert grant.read_manifest(PUBLIC, hub_revisions[PUBLIC]) is None

    def test_unreachable_grant_falls_back(self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str]) -> None:
        grant = SharedCacheGrant("http://127.0.0.1:9/grant", "dep-1", new_secret())
        request = _request(tmp_path, PUBLIC, hub_revisions[PUBLIC], "shared")
        assert fetch_model(request, HubClient(hub_url, None), grant).source == "hub"

    def test_errors_reading_a_presigned_url_do_not_quote_its_signature(self, s3_client: Any, bucket: str) -> None:
        missing = s3_client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": "no/such/object"}, ExpiresIn=60
        )
        unreachable = "http://127.0.0.1:9/bucket/object?X-Amz-Credential=AKIDEXAMPLE&X-Amz-Signature=deadbeef"
        objects = PresignedObjects({"missing": missing, "unreachable": unreachable}, requests.Session(), 5.0)
        for path, url, problem in (("missing", missing, "HTTP 404"), ("unreachable", unreachable, "ConnectionError")):
            with pytest.raises(requests.RequestException) as caught:
                objects.read_range(path, 0, 10)
            query = url.split("?", 1)[1]
            assert query and query not in str(caught.value)
            assert "Signature" not in str(caught.value)
            assert str(caught.value) == f"{problem} reading {path} from {url.split('?', 1)[0]}"


class TestPopulateCommand:
    def test_populates_a_gated_model_for_the_shared_cache(
        self,
        tmp_path: Path,
        hub_url: str,
        hub_revisions: dict[str, str],
        cache: S3ModelCache,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setenv("HF_TOKEN", "hf_tiny_accepted")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "operator")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "operator")
        endpoint = cache._client.meta.endpoint_url
        revision = hub_revisions[GATED]
        argv = [
            "--model", GATED, "--revision", revision, "--s3-url", f"s3://{cache.location.bucket}/models",
            "--endpoint-url", endpoint, "--hf-endpoint", hub_url,
        ]  # fmt: skip
        assert populate(build_parser().parse_args(argv)) == 0
        manifest = cache.read_manifest(GATED, revision)
        assert manifest is not None
        assert manifest.gated is True
        assert populate(build_parser().parse_args(argv)) == 0  # already cached: nothing to do

        # A worker reading that bucket finds it (no Hub read: the endpoint is unreachable).
        request = _request(tmp_path, GATED, revision, "private")
        assert fetch_model(request, HubClient("http://127.0.0.1:9", None), cache).source == "cache"

    def test_refuses_a_branch_name(self, cache: S3ModelCache) -> None:
        args = build_parser().parse_args(["--model", PUBLIC, "--revision", "main", "--s3-url", "s3://b/p"])
        assert populate(args) == 2

    def test_not_found(self, hub_url: str, cache: S3ModelCache, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "operator")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "operator")
        argv = [
            "--model", PRIVATE, "--revision", "1" * 40, "--s3-url", f"s3://{cache.location.bucket}/models",
            "--endpoint-url", cache._client.meta.endpoint_url, "--hf-endpoint", hub_url,
        ]  # fmt: skip
        assert populate(build_parser().parse_args(argv)) == 1


def test_bake_leaves_a_copy_the_worker_reuses(tmp_path: Path, hub_url: str, hub_revisions: dict[str, str]) -> None:
    revision = hub_revisions[PUBLIC]
    argv = ["--model", PUBLIC, "--revision", revision, "--model-dir", str(tmp_path), "--hf-endpoint", hub_url]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("worker.bake.configure_logging", lambda *_: None)
        assert bake_main(argv) == 0
    result = fetch_model(_request(tmp_path, PUBLIC, revision, "off"), HubClient("http://127.0.0.1:9", None), None)
    assert result.source == "local"

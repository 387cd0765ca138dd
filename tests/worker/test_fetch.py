"""Model fetch: Hub, S3 cache hit, miss-then-populate, tampered files, shared-scope allowlist and gating."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.worker.conftest import GATED, NOT_A_PIPELINE, PRIVATE, PUBLIC
from worker.bake import main as bake_main
from worker.cache import MANIFEST_NAME, Manifest, S3ModelCache, sha256_file
from worker.errors import CacheIntegrityError, ModelGatedError, ModelLoadError, ModelNotFoundError
from worker.model_fetch import FetchRequest, HubClient, fetch_model, select_pipeline_files
from worker.populate_cache import build_parser, populate


def _request(model_dir: Path, model_id: str, revision: str, scope: str = "off", **extra: Any) -> FetchRequest:
    return FetchRequest(
        model_id=model_id, revision=revision, model_dir=model_dir, prefer_fp16=False, scope=scope, **extra
    )  # type: ignore[arg-type]


def _repo_files(models_root: Path, model_id: str) -> dict[str, str]:
    repo = models_root / model_id
    return {
        str(path.relative_to(repo)): sha256_file(path)
        for path in repo.rglob("*")
        if path.is_file() and path.name != ".hubsim.json"
    }


class TestSelectPipelineFiles:
    def test_takes_configs_tokenizer_and_safetensors_only(self) -> None:
        paths = [
            "model_index.json",
            "README.md",
            "v1-5-pruned.safetensors",
            "v1-5-pruned.ckpt",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.bin",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "text_encoder/model.safetensors",
            "text_encoder/pytorch_model.bin",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "tokenizer/special_tokens_map.json",
            "scheduler/scheduler_config.json",
            "unet/onnx/model.onnx",
        ]
        assert select_pipeline_files(paths, prefer_fp16=False) == [
            "model_index.json",
            "scheduler/scheduler_config.json",
            "text_encoder/model.safetensors",
            "tokenizer/merges.txt",
            "tokenizer/special_tokens_map.json",
            "tokenizer/vocab.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
        ]

    def test_fp16_variant_per_component_including_sharded(self) -> None:
        paths = [
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors.index.json",
            "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
            "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
            "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
            "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
            "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
        ]
        assert select_pipeline_files(paths, prefer_fp16=True) == [
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
            "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
            "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
        ]

    def test_not_a_pipeline(self) -> None:
        with pytest.raises(ModelLoadError, match=r"model_index\.json"):
            select_pipeline_files(["config.json", "model.safetensors"], prefer_fp16=False)

    def test_pickles_only_is_refused(self) -> None:
        with pytest.raises(ModelLoadError, match="pickled"):
            select_pipeline_files(["model_index.json", "unet/diffusion_pytorch_model.bin"], prefer_fp16=False)


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
        assert not list(tmp_path.glob(".partial-*"))
        # A second start on the same volume reuses the verified local copy.
        again = fetch_model(_request(tmp_path, PUBLIC, hub_revisions[PUBLIC]), HubClient(hub_url, None), None)
        assert again.source == "local"

    def test_gated_without_access(self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str]) -> None:
        request = _request(tmp_path, GATED, hub_revisions[GATED])
        with pytest.raises(ModelGatedError):
            fetch_model(request, HubClient(hub_url, token="hf_tiny_other"), None)
        assert fetch_model(request, HubClient(hub_url, token="hf_tiny_accepted"), None).source == "hub"

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

    def test_tampered_file_rejected_and_not_reused(
        self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str], cache: S3ModelCache, s3_client: Any
    ) -> None:
        revision = hub_revisions[PUBLIC]
        hub = HubClient(hub_url, token=None)
        fetch_model(_request(tmp_path / "a", PUBLIC, revision, "private"), hub, cache)
        manifest = cache.read_manifest(PUBLIC, revision)
        assert manifest is not None
        victim = max(manifest.files, key=lambda item: item.size)  # several ranged parts
        key = cache.key(PUBLIC, revision, victim.path)
        data = bytearray(s3_client.get_object(Bucket=cache.location.bucket, Key=key)["Body"].read())
        data[len(data) // 2] ^= 0xFF
        s3_client.put_object(Bucket=cache.location.bucket, Key=key, Body=bytes(data))

        with pytest.raises(CacheIntegrityError, match="sha256"):
            fetch_model(_request(tmp_path / "b", PUBLIC, revision, "private"), hub, cache)
        assert not (tmp_path / "b" / "visgate-tiny--sd-tiny" / revision).exists()
        assert not list((tmp_path / "b").glob(".partial-*"))
        assert cache.read_manifest(PUBLIC, revision) is None
        # The next start is a miss that repopulates from the Hub.
        assert fetch_model(_request(tmp_path / "c", PUBLIC, revision, "private"), hub, cache).source == "hub"
        assert cache.read_manifest(PUBLIC, revision) is not None

    def test_truncated_file_rejected(
        self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str], cache: S3ModelCache, s3_client: Any
    ) -> None:
        revision = hub_revisions[PUBLIC]
        fetch_model(_request(tmp_path / "a", PUBLIC, revision, "private"), HubClient(hub_url, None), cache)
        manifest = cache.read_manifest(PUBLIC, revision)
        assert manifest is not None
        victim = max(manifest.files, key=lambda item: item.size)
        key = cache.key(PUBLIC, revision, victim.path)
        s3_client.put_object(Bucket=cache.location.bucket, Key=key, Body=b"short")
        with pytest.raises(CacheIntegrityError, match="size"):
            fetch_model(_request(tmp_path / "b", PUBLIC, revision, "private"), HubClient(hub_url, None), cache)


class TestSharedCache:
    @staticmethod
    def _populate(cache: S3ModelCache, models_root: Path, model_id: str, revision: str, gated: bool) -> Manifest:
        files = _repo_files(models_root, model_id)
        manifest = Manifest(
            model_id=model_id,
            revision=revision,
            gated=gated,
            files=[
                {"path": path, "size": (models_root / model_id / path).stat().st_size, "sha256": digest}
                for path, digest in sorted(files.items())
            ],
        )
        cache.upload(manifest, models_root / model_id)
        return manifest

    def test_allowlisted_model_is_served_read_only(
        self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str], cache: S3ModelCache, models_root: Path
    ) -> None:
        revision = hub_revisions[PUBLIC]
        self._populate(cache, models_root, PUBLIC, revision, gated=False)
        request = _request(tmp_path, PUBLIC, revision, "shared", shared_allowlist=frozenset({PUBLIC}))
        assert fetch_model(request, HubClient(hub_url, None), cache).source == "cache"

    def test_model_not_on_allowlist_is_refused(
        self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str], cache: S3ModelCache, models_root: Path
    ) -> None:
        revision = hub_revisions[PUBLIC]
        self._populate(cache, models_root, PUBLIC, revision, gated=False)
        request = _request(tmp_path, PUBLIC, revision, "shared", shared_allowlist=frozenset({GATED}))
        result = fetch_model(request, HubClient(hub_url, None), cache)
        assert result.source == "hub"

    def test_shared_miss_does_not_write(
        self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str], cache: S3ModelCache, s3_client: Any
    ) -> None:
        revision = hub_revisions[PUBLIC]
        request = _request(tmp_path, PUBLIC, revision, "shared", shared_allowlist=frozenset({PUBLIC}))
        assert fetch_model(request, HubClient(hub_url, None), cache).source == "hub"
        assert s3_client.list_objects_v2(Bucket=cache.location.bucket).get("KeyCount") == 0

    def test_gated_model_needs_a_token_with_access(
        self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str], cache: S3ModelCache, models_root: Path
    ) -> None:
        revision = hub_revisions[GATED]
        self._populate(cache, models_root, GATED, revision, gated=True)
        allow = frozenset({GATED})
        with pytest.raises(ModelGatedError):
            fetch_model(
                _request(tmp_path / "a", GATED, revision, "shared", shared_allowlist=allow),
                HubClient(hub_url, "hf_tiny_other"),
                cache,
            )
        with pytest.raises(ModelGatedError):
            fetch_model(
                _request(tmp_path / "b", GATED, revision, "shared", shared_allowlist=allow),
                HubClient(hub_url, None),
                cache,
            )
        result = fetch_model(
            _request(tmp_path / "c", GATED, revision, "shared", shared_allowlist=allow),
            HubClient(hub_url, "hf_tiny_accepted"),
            cache,
        )
        assert result.source == "cache"


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

        request = _request(tmp_path, GATED, revision, "shared", shared_allowlist=frozenset({GATED}))
        assert fetch_model(request, HubClient(hub_url, "hf_tiny_accepted"), cache).source == "cache"

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

"""Get the pinned model's files onto local disk: from the S3 cache when the scope allows it, else from the Hub.

Decisions (issue 4, docs/contracts.md):

- Only the files a diffusers pipeline loads are fetched, configs first, then the weights of one variant for the
  target dtype (:mod:`worker.fetch_plan`); the loader applies the same rule.
- Every file's size and sha256 is checked before the copy is committed in one rename (:mod:`worker.local_copy`), so
  nothing partial is ever loaded; a later start on the same volume reuses the copy.
- Scopes: ``off`` reads the Hub only (:mod:`worker.hub_client`). ``private`` reads the user's bucket
  (:mod:`worker.cache`); on a miss it fetches from the Hub, then uploads the files and the manifest last.
  ``shared`` reads the platform's bucket through a grant from the callback function (:mod:`worker.cache_grant`);
  the platform decides who may read it, workers never write it.
- A cache that cannot serve a verified copy (unreadable or corrupt manifest, a missing or tampered object, a
  refused grant) is not fatal: the worker logs a warning and fetches from the Hub. In ``private`` it first deletes
  the manifest, and the Hub copy repopulates the cache, so a bad copy is never served twice.
- LoRA adapters (:func:`fetch_lora`) come from the Hub only: one safetensors file each, verified the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from shared.cache_layout import Manifest, repo_dirname
from shared.hub_rules import DtypeName, weight_variant
from worker.cache import S3ModelCache
from worker.cache_download import Progress
from worker.errors import CacheGrantRefusedError, CacheIntegrityError, ModelLoadError, ModelNotFoundError
from worker.fetch_plan import (
    manifest_subset,
    ordered_files,
    pipeline_config_files,
    pipeline_weight_files,
    target_dtype,
)
from worker.hub_client import ByteCounter, HubClient, ProgressReport
from worker.local_copy import commit_copy, hash_files, read_local_manifest, scratch_folder

logger = logging.getLogger(__name__)

Source = Literal["local", "cache", "hub"]


@dataclass(frozen=True)
class FetchResult:
    """Where the model's files are and where they came from."""

    path: Path
    source: Source
    manifest: Manifest

    @property
    def loaded_from_cache(self) -> bool:
        """True when no byte came from the Hub on this start."""
        return self.source != "hub"


@dataclass(frozen=True)
class FetchRequest:
    """What to fetch and how."""

    model_id: str
    revision: str
    model_dir: Path
    device: str = "cpu"
    dtype: DtypeName | None = None
    scope: Literal["off", "shared", "private"] = "off"

    @property
    def final_dir(self) -> Path:
        """The verified local copy: ``<model_dir>/<org--name>/<revision>``."""
        return self.model_dir / repo_dirname(self.model_id) / self.revision


class ModelCache(Protocol):
    """What a cache scope offers the fetch: :class:`S3ModelCache` (``private``) or :class:`SharedCacheGrant`."""

    def read_manifest(self, model_id: str, revision: str) -> Manifest | None: ...

    def download(self, manifest: Manifest, dest: Path, progress: Progress | None = None) -> None: ...


def fetch_model(
    request: FetchRequest,
    hub: HubClient,
    cache: ModelCache | None,
    progress: ProgressReport | None = None,
) -> FetchResult:
    """Put a verified copy of the model in ``request.final_dir`` and say where it came from.

    Args:
        request: model, revision, local folder, target device and dtype, and cache scope.
        hub: Hub client with the user's token.
        cache: the cache of the scope (None for ``off``).
        progress: called with (bytes_done, bytes_total) as bytes arrive.

    Raises:
        WorkerError: a reason-coded failure (not found, gated, not a pipeline, a Hub file that does not verify).
    """
    local = read_local_manifest(request.final_dir)
    if local is not None:
        logger.info("model found on local disk", extra={"path": str(request.final_dir)})
        return FetchResult(request.final_dir, "local", local)
    if cache is not None and request.scope != "off":
        cached = _from_cache(request, cache, progress)
        if cached is not None:
            return FetchResult(request.final_dir, "cache", cached)
    manifest = fetch_from_hub(request, hub, progress)
    if request.scope == "private" and isinstance(cache, S3ModelCache):
        _populate(cache, manifest, request.final_dir)
    return FetchResult(request.final_dir, "hub", manifest)


def _from_cache(request: FetchRequest, cache: ModelCache, progress: ProgressReport | None) -> Manifest | None:
    """The manifest of a verified copy fetched from the cache, or None to go to the Hub (a miss, or a cache that
    cannot serve it: see the module docstring)."""
    try:
        manifest = cache.read_manifest(request.model_id, request.revision)
        if manifest is None:
            logger.info("cache miss", extra={"model": request.model_id, "scope": request.scope})
            return None
        paths = [entry.path for entry in manifest.files]
        configs = pipeline_config_files(paths)
        # The total grows once the weights are chosen; until then it covers the configs, so done <= total.
        counter = ByteCounter(manifest_subset(manifest, configs).total_bytes, progress)
        with scratch_folder(request.model_dir, request.model_id) as scratch:
            cache.download(manifest_subset(manifest, configs), scratch, counter.add)
            weights = pipeline_weight_files(paths, target_dtype(request.device, request.dtype, scratch), scratch)
            selected = manifest_subset(manifest, ordered_files(configs, weights))
            counter.total = selected.total_bytes
            cache.download(manifest_subset(manifest, weights), scratch, counter.add)
            commit_copy(scratch, request.final_dir, selected)
        return selected
    except (CacheIntegrityError, CacheGrantRefusedError) as exc:
        logger.warning("the %s cache cannot serve %s (%s); fetching from the Hub", request.scope, request.model_id, exc)
        if isinstance(exc, CacheIntegrityError) and isinstance(cache, S3ModelCache):
            cache.invalidate(request.model_id, request.revision)
        return None


def fetch_from_hub(request: FetchRequest, hub: HubClient, progress: ProgressReport | None) -> Manifest:
    """Download the pipeline's files from the Hub into ``request.final_dir``, verified, and describe them.

    Raises:
        WorkerError: not found, gated, not a pipeline, or a file that differs from the Hub's size or sha256.
    """
    gated, files = hub.repo_files(request.model_id, request.revision)
    paths = sorted(files)
    configs = pipeline_config_files(paths)
    counter = ByteCounter(sum(files[path][0] or 0 for path in configs), progress)
    with scratch_folder(request.model_dir, request.model_id) as scratch:
        # Configs first: the target dtype may depend on them, and it picks the weight variant.
        hub.download(request.model_id, request.revision, configs, scratch, counter)
        weights = pipeline_weight_files(paths, target_dtype(request.device, request.dtype, scratch), scratch)
        selected = ordered_files(configs, weights)
        counter.total = sum(files[path][0] or 0 for path in selected)
        hub.download(request.model_id, request.revision, weights, scratch, counter)
        entries = hash_files(scratch, selected)
        for entry in entries:
            size, lfs_sha256 = files[entry.path]
            if (size is not None and size != entry.size) or (lfs_sha256 and lfs_sha256 != entry.sha256):
                raise ModelLoadError(f"{entry.path}: downloaded file does not match the Hub's size or sha256")
        manifest = Manifest(model_id=request.model_id, revision=request.revision, gated=gated, files=entries)
        commit_copy(scratch, request.final_dir, manifest)
    return manifest


def fetch_lora(model_id: str, revision: str, weight_name: str, model_dir: Path, hub: HubClient) -> Path:
    """A verified local copy of one LoRA adapter file: ``<model_dir>/loras/<org--name>/<revision>/<weight_name>``.

    Only a safetensors file is fetched (a pickle could run code when loaded), and its size and sha256 must be the
    Hub's; a copy verified by an earlier start on the same volume is reused.

    Raises:
        WorkerError: not found, gated, not safetensors, or a file that differs from the Hub's size or sha256.
    """
    request = FetchRequest(model_id=model_id, revision=revision, model_dir=model_dir / "loras")
    target = request.final_dir / weight_name
    if read_local_manifest(request.final_dir) is not None and target.is_file():
        return target
    if not weight_variant(weight_name.rsplit("/", 1)[-1])[0] or not weight_name.endswith(".safetensors"):
        raise ModelLoadError(f"LoRA {model_id}: {weight_name} is not a safetensors file")
    gated, files = hub.repo_files(model_id, revision)
    if weight_name not in files:
        raise ModelNotFoundError(f"LoRA {model_id}@{revision} has no {weight_name}")
    size, lfs_sha256 = files[weight_name]
    if not lfs_sha256:
        raise ModelLoadError(f"LoRA {model_id}: the Hub gives no sha256 for {weight_name} to verify it against")
    with scratch_folder(request.model_dir, request.model_id) as scratch:
        hub.download(model_id, revision, [weight_name], scratch, ByteCounter(size or 0, None))
        entries = hash_files(scratch, [weight_name])
        if (size is not None and entries[0].size != size) or entries[0].sha256 != lfs_sha256:
            raise ModelLoadError(f"LoRA {model_id}: {weight_name} does not match the Hub's size or sha256")
        commit_copy(
            scratch, request.final_dir, Manifest(model_id=model_id, revision=revision, gated=gated, files=entries)
        )
    logger.info("LoRA fetched", extra={"model": model_id, "bytes": entries[0].size})
    return target


def _populate(cache: S3ModelCache, manifest: Manifest, folder: Path) -> None:
    """Fill the private cache after a miss. A failed upload costs the next start time, not this one its model."""
    try:
        cache.upload(manifest, folder)
    except Exception:
        logger.exception("populating the private cache failed; the next start fetches from the Hub again")
    else:
        logger.info("private cache populated", extra={"model": manifest.model_id, "bytes": manifest.total_bytes})

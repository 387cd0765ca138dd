"""Get the pinned model's files onto local disk: from the S3 cache when the scope allows it, else from the Hub.

Decisions (issue 4, docs/contracts.md):

- Only the files a diffusers pipeline loads are fetched: ``model_index.json`` and, in each component folder
  (``unet/``, ``vae/``, ``tokenizer/``, ...), its JSON configs, tokenizer vocabularies and ``.safetensors``
  weights. Pickles (``.bin``, ``.pt``, ``.ckpt``, ...) never are, nor root-level single-file checkpoints or nested
  exports (``unet/onnx/...``), which diffusers' folder loader does not read. A cache manifest is filtered through
  the same rules, so a cache that holds a pickle never hands it out.
- Weight variants: the configs come first, then the target dtype (:func:`worker.variants.folder_dtype`) and the
  files present pick one variant for the pipeline (:func:`shared.hub_rules.pipeline_weight_files`, the rule
  provisioning sizes the model by), and only those weights are fetched; the loader applies the same rule.
- Files land in a scratch folder next to the final one and are moved into place in one rename only after every
  size and sha256 checked out, so nothing partial is ever loaded; a later start on the same volume reuses them.
- Scopes: ``off`` reads the Hub only. ``private`` reads the user's bucket; on a miss it fetches from the Hub,
  then uploads the files and the manifest last. ``shared`` reads the platform's bucket through a grant from the
  callback function (:mod:`worker.cache_grant`); the platform decides who may read it, workers never write it.
- A cache that cannot serve a verified copy (unreadable or corrupt manifest, a missing or tampered object, a
  refused grant) is not fatal: the worker logs a warning and fetches from the Hub. In ``private`` it first deletes
  the manifest, and the Hub copy repopulates the cache, so a bad copy is never served twice.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from tqdm.std import tqdm

from shared import hub_rules
from shared.cache_layout import Manifest, ManifestFile, repo_dirname
from shared.hub_rules import DtypeName, hub_refusal, loaded_components, weight_variant
from worker.cache import Progress, S3ModelCache, sha256_file
from worker.errors import (
    CacheGrantRefusedError,
    CacheIntegrityError,
    HfTokenInvalidError,
    ModelGatedError,
    ModelLoadError,
    ModelNotFoundError,
    WorkerError,
)
from worker.variants import folder_dtype, read_index

logger = logging.getLogger(__name__)

LOCAL_MANIFEST = ".visgate-manifest.json"
CONFIG_SUFFIXES = (".json", ".txt", ".model")

Source = Literal["local", "cache", "hub"]
ProgressReport = Callable[[int, int], None]


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


def _components(paths: Iterable[str]) -> dict[str, list[str]]:
    """The file names of each component folder (one level deep; nested exports are not components)."""
    by_component: dict[str, list[str]] = {}
    for path in paths:
        folder, _, name = path.partition("/")
        if name and "/" not in name:
            by_component.setdefault(folder, []).append(name)
    return by_component


def pipeline_config_files(paths: list[str]) -> list[str]:
    """``model_index.json`` and every component's configs and tokenizer files (no weights).

    Raises:
        ModelLoadError: no ``model_index.json`` (not a diffusers pipeline).
    """
    if "model_index.json" not in paths:
        raise ModelLoadError("not a diffusers pipeline: the repo has no model_index.json")
    selected = ["model_index.json"]
    for folder, names in sorted(_components(paths).items()):
        for name in sorted(names):
            if not weight_variant(name)[0] and name.endswith(CONFIG_SUFFIXES):
                selected.append(f"{folder}/{name}")
    return selected


def pipeline_weight_files(paths: list[str], dtype: str, folder: Path) -> list[str]:
    """The weights the pipeline whose configs are in ``folder`` loads in ``dtype``
    (:func:`shared.hub_rules.pipeline_weight_files`).

    Raises:
        ModelLoadError: a component with pickled weights only, or weights no single variant loads.
    """
    try:
        return hub_rules.pipeline_weight_files(paths, dtype, loaded_components(read_index(folder)))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(str(exc)) from exc


def _ordered(configs: list[str], weights: list[str]) -> list[str]:
    return ["model_index.json", *sorted({*configs, *weights} - {"model_index.json"})]


def _dtype_of(request: FetchRequest, folder: Path) -> str:
    """The target dtype, from a folder that holds the configs so far."""
    try:
        return folder_dtype(request.device, request.dtype, folder)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"unreadable pipeline config: {exc}") from exc


def _subset(manifest: Manifest, paths: Iterable[str]) -> Manifest:
    wanted = set(paths)
    return manifest.model_copy(update={"files": [entry for entry in manifest.files if entry.path in wanted]})


class _ByteCounter:
    """Thread-safe running total of downloaded bytes, forwarded to a progress report."""

    def __init__(self, total: int, report: ProgressReport | None) -> None:
        self.total = total
        self.done = 0
        self._report = report
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        with self._lock:
            self.done += count
            done = self.done
        if self._report:
            self._report(done, self.total)


def _progress_tqdm(counter: _ByteCounter) -> type[tqdm]:
    """A silent tqdm class that forwards huggingface_hub's byte updates to ``counter``."""

    class _Forwarding(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            counter.add(int(n or 0))
            return super().update(n)

    return _Forwarding


class HubClient:
    """The few Hub calls the worker makes, with Hub errors mapped to reason codes."""

    def __init__(self, endpoint: str, token: str | None, concurrency: int = 8) -> None:
        """Talk to ``endpoint`` (HF_ENDPOINT) as ``token``'s user."""
        self.endpoint = endpoint
        self._token = token
        self._api = HfApi(endpoint=endpoint, token=token)
        self._concurrency = concurrency

    def repo_files(self, model_id: str, revision: str) -> tuple[bool, dict[str, tuple[int | None, str | None]]]:
        """Whether the repo is gated, and every file at ``revision`` with its size and LFS sha256 (when known)."""
        with _hub_errors(model_id, revision):
            info = self._api.model_info(model_id, revision=revision, files_metadata=True)
        files = {
            sibling.rfilename: (sibling.size, sibling.lfs.sha256 if sibling.lfs else None)
            for sibling in info.siblings or []
        }
        return bool(info.gated), files

    def download(self, model_id: str, revision: str, paths: list[str], dest: Path, counter: _ByteCounter) -> None:
        """Download ``paths`` of the repo at ``revision`` into ``dest`` (parallel across files)."""
        progress_class = _progress_tqdm(counter)

        def one(path: str) -> None:
            with _hub_errors(model_id, revision):
                hf_hub_download(
                    model_id,
                    path,
                    revision=revision,
                    local_dir=dest,
                    token=self._token,
                    endpoint=self.endpoint,
                    tqdm_class=progress_class,
                )

        with ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="hub") as pool:
            list(pool.map(one, paths))
        # hf_hub_download keeps its bookkeeping under <local_dir>/.cache; the loader does not need it.
        shutil.rmtree(dest / ".cache", ignore_errors=True)


@contextmanager
def _hub_errors(model_id: str, revision: str) -> Iterator[None]:
    """Translate huggingface_hub exceptions into the worker's reason-coded errors."""
    where = f"{model_id}@{revision}"
    try:
        yield
    # GatedRepoError subclasses RepositoryNotFoundError, so it comes first.
    except GatedRepoError as exc:
        raise ModelGatedError(f"{where} is gated and the token has no access") from exc
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as exc:
        raise ModelNotFoundError(f"{where} not found on the Hub (or not visible to the token)") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        refusal = hub_refusal(status, exc.response.headers.get("X-Error-Message") if exc.response is not None else None)
        if refusal == "hf_token_invalid":
            raise HfTokenInvalidError(f"{where}: the Hub refused the token as invalid or expired") from exc
        if refusal == "model_gated":
            raise ModelGatedError(f"{where}: the Hub refused the token ({status})") from exc
        raise WorkerError(f"{where}: Hub request failed ({status})") from exc


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
    local = _read_local_manifest(request.final_dir)
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
        counter = _ByteCounter(_subset(manifest, configs).total_bytes, progress)
        with _scratch(request) as scratch:
            cache.download(_subset(manifest, configs), scratch, counter.add)
            weights = pipeline_weight_files(paths, _dtype_of(request, scratch), scratch)
            selected = _subset(manifest, _ordered(configs, weights))
            counter.total = selected.total_bytes
            cache.download(_subset(manifest, weights), scratch, counter.add)
            _commit(scratch, request.final_dir, selected)
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
    counter = _ByteCounter(sum(files[path][0] or 0 for path in configs), progress)
    with _scratch(request) as scratch:
        # Configs first: the target dtype may depend on them, and it picks the weight variant.
        hub.download(request.model_id, request.revision, configs, scratch, counter)
        weights = pipeline_weight_files(paths, _dtype_of(request, scratch), scratch)
        selected = _ordered(configs, weights)
        counter.total = sum(files[path][0] or 0 for path in selected)
        hub.download(request.model_id, request.revision, weights, scratch, counter)
        entries = _hash_files(scratch, selected)
        for entry in entries:
            size, lfs_sha256 = files[entry.path]
            if (size is not None and size != entry.size) or (lfs_sha256 and lfs_sha256 != entry.sha256):
                raise ModelLoadError(f"{entry.path}: downloaded file does not match the Hub's size or sha256")
        manifest = Manifest(model_id=request.model_id, revision=request.revision, gated=gated, files=entries)
        _commit(scratch, request.final_dir, manifest)
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
    if _read_local_manifest(request.final_dir) is not None and target.is_file():
        return target
    if not weight_variant(weight_name.rsplit("/", 1)[-1])[0] or not weight_name.endswith(".safetensors"):
        raise ModelLoadError(f"LoRA {model_id}: {weight_name} is not a safetensors file")
    gated, files = hub.repo_files(model_id, revision)
    if weight_name not in files:
        raise ModelNotFoundError(f"LoRA {model_id}@{revision} has no {weight_name}")
    size, lfs_sha256 = files[weight_name]
    if not lfs_sha256:
        raise ModelLoadError(f"LoRA {model_id}: the Hub gives no sha256 for {weight_name} to verify it against")
    with _scratch(request) as scratch:
        hub.download(model_id, revision, [weight_name], scratch, _ByteCounter(size or 0, None))
        entries = _hash_files(scratch, [weight_name])
        if (size is not None and entries[0].size != size) or entries[0].sha256 != lfs_sha256:
            raise ModelLoadError(f"LoRA {model_id}: {weight_name} does not match the Hub's size or sha256")
        _commit(scratch, request.final_dir, Manifest(model_id=model_id, revision=revision, gated=gated, files=entries))
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


def _hash_files(folder: Path, paths: list[str]) -> list[ManifestFile]:
    """Size and sha256 of each file; files hash in parallel (hashlib releases the GIL on large buffers)."""

    def one(path: str) -> ManifestFile:
        target = folder / path
        return ManifestFile(path=path, size=target.stat().st_size, sha256=sha256_file(target))

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="hash") as pool:
        return list(pool.map(one, paths))


@contextmanager
def _scratch(request: FetchRequest) -> Iterator[Path]:
    """A fresh scratch folder beside the final one (same filesystem, so the final move is one rename)."""
    path = request.model_dir / f".partial-{repo_dirname(request.model_id)}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _commit(scratch: Path, final: Path, manifest: Manifest) -> None:
    """Move a verified scratch folder into place; the local manifest marks it complete."""
    (scratch / LOCAL_MANIFEST).write_text(manifest.model_dump_json(), encoding="utf-8")
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        # Another worker on the same volume finished first, or a stale incomplete copy: replace it.
        shutil.rmtree(final)
    scratch.rename(final)


def _read_local_manifest(final: Path) -> Manifest | None:
    marker = final / LOCAL_MANIFEST
    if not marker.is_file():
        return None
    try:
        return Manifest.model_validate(json.loads(marker.read_text(encoding="utf-8")))
    except ValueError:
        logger.warning("ignoring an unreadable local manifest", extra={"path": str(marker)})
        return None

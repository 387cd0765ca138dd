"""Get the pinned model's files onto local disk: from the S3 cache when the scope allows it, else from the Hub.

Decisions (issue 4, docs/contracts.md):

- Only the files a diffusers pipeline loads are fetched: ``model_index.json`` and, in each component folder
  (``unet/``, ``vae/``, ``tokenizer/``, ...), its JSON configs, tokenizer vocabularies and ``.safetensors``
  weights. Pickles (``.bin``, ``.pt``, ``.ckpt``, ...) never are, nor root-level single-file checkpoints or nested
  exports (``unet/onnx/...``), which diffusers' folder loader does not read.
- fp16 variant: when the target dtype is float16 and a component ships ``*.fp16.safetensors``, only those weights
  are fetched for it; otherwise only the default weights. A cache holds whatever its populator fetched; the loader
  picks the variant from the files present (fp16 weights load fine into any dtype).
- Files land in a scratch folder next to the final one and are moved into place in one rename only after every
  size and sha256 checked out, so nothing partial is ever loaded; a later start on the same volume reuses them.
- Scopes: ``off`` reads the Hub only. ``private`` reads the user's bucket; on a miss it fetches from the Hub,
  then uploads the files and the manifest last. A cached file that fails verification fails the start with
  ``model_load_failed`` and its manifest is deleted, so the next start is a miss that repopulates from the Hub
  (rather than silently falling back now and hiding a corrupt bucket). ``shared`` reads the platform's bucket
  read-only, only for models on the allowlist (others go to the Hub, with a warning); a gated model is served
  from it only after the user's token passes the Hub's access check. Workers never write the shared cache.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from tqdm.std import tqdm

from worker.cache import Manifest, ManifestFile, S3ModelCache, repo_dirname, sha256_file
from worker.errors import CacheIntegrityError, ModelGatedError, ModelLoadError, ModelNotFoundError, WorkerError

logger = logging.getLogger(__name__)

LOCAL_MANIFEST = ".visgate-manifest.json"
CONFIG_SUFFIXES = (".json", ".txt", ".model")
# <name>[.<variant>][-00001-of-00003].safetensors, and the shard index <name>.safetensors.index[.<variant>].json
WEIGHT_RE = re.compile(r"^[^.]+(?:\.(?P<variant>[A-Za-z0-9_]+))?(?:-\d{5}-of-\d{5})?\.safetensors$")
INDEX_RE = re.compile(r"^[^.]+\.safetensors\.index(?:\.(?P<variant>[A-Za-z0-9_]+))?\.json$")
FP16 = "fp16"

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
    prefer_fp16: bool
    scope: Literal["off", "shared", "private"] = "off"
    shared_allowlist: frozenset[str] = frozenset()

    @property
    def final_dir(self) -> Path:
        """The verified local copy: ``<model_dir>/<org--name>/<revision>``."""
        return self.model_dir / repo_dirname(self.model_id) / self.revision


def select_pipeline_files(paths: list[str], prefer_fp16: bool) -> list[str]:
    """The repo files a diffusers pipeline loads, chosen per component folder.

    Args:
        paths: every file path in the repo at the pinned commit.
        prefer_fp16: take a component's ``fp16`` variant weights when it has them.

    Raises:
        ModelLoadError: no ``model_index.json`` (not a diffusers pipeline) or a component without safetensors.
    """
    if "model_index.json" not in paths:
        raise ModelLoadError("not a diffusers pipeline: the repo has no model_index.json")
    by_component: dict[str, list[str]] = {}
    for path in paths:
        folder, _, name = path.partition("/")
        if name and "/" not in name:
            by_component.setdefault(folder, []).append(name)
    selected = ["model_index.json"]
    for folder, names in sorted(by_component.items()):
        variants = {_variant(name) for name in names if name.endswith(".safetensors")}
        has_default_weights = None in variants
        variant = FP16 if (prefer_fp16 or not has_default_weights) and FP16 in variants else None
        for name in sorted(names):
            weight, index = WEIGHT_RE.match(name), INDEX_RE.match(name)
            if weight or index:
                if _variant(name) == variant:
                    selected.append(f"{folder}/{name}")
            elif name.endswith(CONFIG_SUFFIXES):
                selected.append(f"{folder}/{name}")
        if any(name.endswith((".bin", ".ckpt", ".pt", ".pth")) for name in names) and not variants:
            raise ModelLoadError(f"component {folder!r} has pickled weights only; safetensors are required")
    return selected


def _variant(name: str) -> str | None:
    match = WEIGHT_RE.match(name) or INDEX_RE.match(name)
    return match.group("variant") if match else None


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

    def check_access(self, model_id: str, revision: str) -> None:
        """Raise unless the token may download the repo's files (the Hub's gate check)."""
        with _hub_errors(model_id, revision):
            self._api.auth_check(model_id, token=self._token)

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
        if status in {401, 403}:
            raise ModelGatedError(f"{where}: the Hub refused the token ({status})") from exc
        raise WorkerError(f"{where}: Hub request failed ({status})") from exc


def fetch_model(
    request: FetchRequest,
    hub: HubClient,
    cache: S3ModelCache | None,
    progress: ProgressReport | None = None,
) -> FetchResult:
    """Put a verified copy of the model in ``request.final_dir`` and say where it came from.

    Args:
        request: model, revision, local folder, variant preference and cache scope.
        hub: Hub client with the user's token.
        cache: the S3 cache of the scope (None for ``off``).
        progress: called with (bytes_done, bytes_total) as bytes arrive.

    Raises:
        WorkerError: a reason-coded failure (not found, gated, integrity, ...).
    """
    local = _read_local_manifest(request.final_dir)
    if local is not None:
        logger.info("model found on local disk", extra={"path": str(request.final_dir)})
        return FetchResult(request.final_dir, "local", local)
    use_cache = cache is not None and request.scope in {"shared", "private"}
    if request.scope == "shared" and request.model_id not in request.shared_allowlist:
        logger.warning("shared cache refused: %s is not on the allowlist; fetching from the Hub", request.model_id)
        use_cache = False
    if use_cache and cache is not None:
        manifest = cache.read_manifest(request.model_id, request.revision)
        if manifest is not None:
            if request.scope == "shared" and manifest.gated:
                hub.check_access(request.model_id, request.revision)
            _from_cache(request, cache, manifest, progress)
            return FetchResult(request.final_dir, "cache", manifest)
        logger.info("cache miss", extra={"model": request.model_id, "scope": request.scope})
    manifest = fetch_from_hub(request, hub, progress)
    if use_cache and cache is not None and request.scope == "private":
        _populate(cache, manifest, request.final_dir)
    return FetchResult(request.final_dir, "hub", manifest)


def _from_cache(
    request: FetchRequest, cache: S3ModelCache, manifest: Manifest, progress: ProgressReport | None
) -> None:
    counter = _ByteCounter(manifest.total_bytes, progress)
    counter.add(0)
    with _scratch(request) as scratch:
        try:
            cache.download(manifest, scratch, counter.add)
        except CacheIntegrityError:
            if request.scope == "private":
                cache.invalidate(request.model_id, request.revision)
            raise
        _commit(scratch, request.final_dir, manifest)


def fetch_from_hub(request: FetchRequest, hub: HubClient, progress: ProgressReport | None) -> Manifest:
    """Download the pipeline's files from the Hub into ``request.final_dir``, verified, and describe them.

    Raises:
        WorkerError: not found, gated, not a pipeline, or a file that differs from the Hub's size or sha256.
    """
    gated, files = hub.repo_files(request.model_id, request.revision)
    selected = select_pipeline_files(sorted(files), request.prefer_fp16)
    counter = _ByteCounter(sum(files[path][0] or 0 for path in selected), progress)
    counter.add(0)
    with _scratch(request) as scratch:
        hub.download(request.model_id, request.revision, selected, scratch, counter)
        entries = _hash_files(scratch, selected)
        for entry in entries:
            size, lfs_sha256 = files[entry.path]
            if (size is not None and size != entry.size) or (lfs_sha256 and lfs_sha256 != entry.sha256):
                raise ModelLoadError(f"{entry.path}: downloaded file does not match the Hub's size or sha256")
        manifest = Manifest(model_id=request.model_id, revision=request.revision, gated=gated, files=entries)
        _commit(scratch, request.final_dir, manifest)
    return manifest


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

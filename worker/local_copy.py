"""The verified local copy of a model: a scratch folder, the one-rename commit, the local manifest that marks it.

Files land in a scratch folder next to the final one and are moved into place in one rename only after every size
and sha256 checked out, so nothing partial is ever loaded; the local manifest written with them marks the copy
complete, and a later start on the same volume reuses it.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from shared.cache_layout import Manifest, ManifestFile, repo_dirname
from worker.cache_download import sha256_file

logger = logging.getLogger(__name__)

LOCAL_MANIFEST = ".visgate-manifest.json"


def hash_files(folder: Path, paths: list[str]) -> list[ManifestFile]:
    """Size and sha256 of each file; files hash in parallel (hashlib releases the GIL on large buffers)."""

    def one(path: str) -> ManifestFile:
        target = folder / path
        return ManifestFile(path=path, size=target.stat().st_size, sha256=sha256_file(target))

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="hash") as pool:
        return list(pool.map(one, paths))


@contextmanager
def scratch_folder(model_dir: Path, model_id: str) -> Iterator[Path]:
    """A fresh scratch folder in ``model_dir``, beside the final one (same filesystem, so the final move is one
    rename); removed on the way out."""
    path = model_dir / f".partial-{repo_dirname(model_id)}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def commit_copy(scratch: Path, final: Path, manifest: Manifest) -> None:
    """Move a verified scratch folder into place; the local manifest marks it complete."""
    (scratch / LOCAL_MANIFEST).write_text(manifest.model_dump_json(), encoding="utf-8")
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        # Another worker on the same volume finished first, or a stale incomplete copy: replace it.
        shutil.rmtree(final)
    scratch.rename(final)


def read_local_manifest(final: Path) -> Manifest | None:
    """The local manifest of a complete copy in ``final``, or None (no copy, an incomplete one, or unreadable)."""
    marker = final / LOCAL_MANIFEST
    if not marker.is_file():
        return None
    try:
        return Manifest.model_validate(json.loads(marker.read_text(encoding="utf-8")))
    except ValueError:
        logger.warning("ignoring an unreadable local manifest", extra={"path": str(marker)})
        return None

"""The one verified download path of the model cache: parallel ranged parts, sha256 computed while they stream.

Every cache read goes through :class:`ModelDownloader`, whatever the source of the bytes (:class:`ObjectSource`: the
S3 client of :class:`worker.cache.S3ModelCache` for ``private``, the presigned URLs of a cache grant for ``shared``,
see :mod:`worker.cache_grant`). Downloads split every file into ranged parts fetched by a bounded thread pool, each
part retried a few times; each part streams into its place in the file in fixed-size chunks, so memory stays at
about ``concurrency x chunk`` whatever the model size. Any failure (S3 or HTTP errors, a broken stream, a size or
sha256 mismatch) is a :class:`~worker.errors.CacheIntegrityError`: the caller falls back to the Hub. Each file's
sha256 is computed while the download runs: the thread fetching the next part in order hashes it as it streams,
and parts that finish out of order are hashed (read back from the page cache) as soon as their turn comes, so
hashing overlaps the network instead of following it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from shared.cache_layout import Manifest, ManifestFile
from worker.errors import CacheIntegrityError

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
HASH_READ_SIZE = 8 * 1024 * 1024
DEFAULT_PART_SIZE = 32 * 1024 * 1024

Progress = Callable[[int], None]


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(HASH_READ_SIZE):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class _FileState:
    """Download bookkeeping of one file: which parts landed, and the in-order hash over them."""

    entry: ManifestFile
    path: Path
    parts: list[tuple[int, int]]
    digest: Any = field(default_factory=hashlib.sha256)
    done: set[int] = field(default_factory=set)
    next_to_hash: int = 0
    hashing: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The digest before an inline-hashed part began, so a failed attempt at that part can be undone.
    before_inline: Any = None

    def claim_inline(self, index: int) -> bool:
        """Take the hashing role for a part that is next in order, so it is hashed as it streams in."""
        with self.lock:
            if self.hashing or self.next_to_hash != index:
                return False
            self.hashing = True
            self.before_inline = self.digest.copy()
            return True

    def abandon_inline(self) -> None:
        """Undo the hashing of an inline part whose download failed, and give the hashing role back."""
        with self.lock:
            self.digest = self.before_inline
            self.hashing = False

    def part_done(self, index: int, hashed_inline: bool = False) -> None:
        """Record a finished part and hash every finished part that is next in order.

        One thread hashes a file at a time (whoever holds the role); the others record their part and go back to
        downloading, so no download thread waits on a hash. Parts hashed inline need no read-back; parts that
        finished out of order are read back from the page cache.
        """
        with self.lock:
            self.done.add(index)
            if hashed_inline:
                self.next_to_hash += 1
            elif self.hashing:
                return
            else:
                self.hashing = True
        with self.path.open("rb") as handle:
            while True:
                with self.lock:
                    if self.next_to_hash not in self.done:
                        self.hashing = False
                        return
                    start, stop = self.parts[self.next_to_hash]
                handle.seek(start)
                remaining = stop - start
                while remaining:
                    block = handle.read(min(HASH_READ_SIZE, remaining))
                    self.digest.update(block)
                    remaining -= len(block)
                with self.lock:
                    self.next_to_hash += 1

    def verify(self) -> None:
        """Raise :class:`CacheIntegrityError` unless every part was hashed and the sha256 matches."""
        if self.next_to_hash != len(self.parts):
            raise CacheIntegrityError(f"{self.entry.path}: incomplete download")
        if self.digest.hexdigest() != self.entry.sha256:
            raise CacheIntegrityError(f"{self.entry.path}: sha256 mismatch with the cache manifest")


class ObjectSource(Protocol):
    """Where the bytes of one cached model's files come from: an S3 client (``private``) or the presigned URLs
    of a cache grant (``shared``). Anything it raises is a failed read; the downloader retries the part."""

    def read_range(self, path: str, start: int, stop: int) -> tuple[int | None, Iterator[bytes]]:
        """The object's total size (when the server says it) and the bytes ``[start, stop)`` of repo file
        ``path``, as chunks of at most :data:`CHUNK_SIZE`."""
        ...


def content_range_total(header: str | None) -> int | None:
    """The total size of ``Content-Range: bytes 0-9/1234`` (None when absent or unknown)."""
    total = str(header or "").rpartition("/")[2]
    return int(total) if total.isdigit() else None


class ModelDownloader:
    """The one download-and-verify path of the cache, whatever the :class:`ObjectSource`.

    Every file is split into ranged parts fetched by a bounded thread pool; a part that fails is retried
    ``attempts`` times in all before the download counts as an integrity failure.
    """

    def __init__(
        self,
        source: ObjectSource,
        *,
        concurrency: int = 16,
        part_size: int = DEFAULT_PART_SIZE,
        attempts: int = 3,
        retry_backoff_s: float = 0.25,
    ) -> None:
        """Read from ``source`` with ``concurrency`` parallel ranged requests of ``part_size`` bytes."""
        self._source = source
        self._concurrency = concurrency
        self._part_size = part_size
        self._attempts = attempts
        self._retry_backoff_s = retry_backoff_s

    def download(self, manifest: Manifest, dest: Path, progress: Progress | None = None) -> None:
        """Download and verify every file of ``manifest`` into ``dest``.

        Raises:
            CacheIntegrityError: a part stayed unreadable, or a size or sha256 differs from the manifest. Files
                in ``dest`` are then partial; the caller discards ``dest``.
        """
        states = [self._prepare(entry, dest) for entry in manifest.files]
        tasks = [(state, index) for state in states for index in range(len(state.parts))]
        run_parallel(lambda task: self._fetch_part(task[0], task[1], progress), tasks, self._concurrency)
        for state in states:
            state.verify()

    def _prepare(self, entry: ManifestFile, dest: Path) -> _FileState:
        target = dest / entry.path
        if not target.resolve().is_relative_to(dest.resolve()):
            raise CacheIntegrityError(f"manifest path escapes the model folder: {entry.path!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as handle:
            handle.truncate(entry.size)
        starts = range(0, entry.size, self._part_size)
        parts = [(start, min(start + self._part_size, entry.size)) for start in starts]
        return _FileState(entry=entry, path=target, parts=parts)

    def _fetch_part(self, state: _FileState, index: int, progress: Progress | None) -> None:
        for attempt in range(1, self._attempts + 1):
            inline = state.claim_inline(index)
            try:
                self._stream_part(state, index, inline)
            except Exception as exc:
                if inline:
                    state.abandon_inline()
                if attempt == self._attempts:
                    if isinstance(exc, CacheIntegrityError):
                        raise
                    raise CacheIntegrityError(f"{state.entry.path}: unreadable ({type(exc).__name__}: {exc})") from exc
                logger.warning("a part of cached %s failed (%s); retrying", state.entry.path, exc)
                time.sleep(self._retry_backoff_s * attempt)
            else:
                state.part_done(index, hashed_inline=inline)
                if progress:
                    start, stop = state.parts[index]
                    progress(stop - start)
                return

    def _stream_part(self, state: _FileState, index: int, inline: bool) -> None:
        start, stop = state.parts[index]
        total, chunks = self._source.read_range(state.entry.path, start, stop)
        # The total in Content-Range catches an object that grew or shrank since the manifest was written.
        if total is not None and total != state.entry.size:
            raise CacheIntegrityError(f"{state.entry.path}: size {total} differs from the manifest")
        written = 0
        with state.path.open("r+b") as handle:
            handle.seek(start)
            for chunk in chunks:
                if written + len(chunk) > stop - start:
                    raise CacheIntegrityError(f"{state.entry.path}: more bytes than the manifest size")
                handle.write(chunk)
                if inline:
                    state.digest.update(chunk)
                written += len(chunk)
        if written != stop - start:
            raise CacheIntegrityError(f"{state.entry.path}: short read at byte {start + written}")


def run_parallel(work: Callable[[Any], None], items: Iterable[Any], workers: int) -> None:
    """Run ``work`` over ``items`` on a bounded pool; the first failure cancels what has not started."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cache") as pool:
        futures: list[Future[None]] = [pool.submit(work, item) for item in items]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [future for future in finished if future.exception() is not None]
        if failed:
            for future in futures:
                future.cancel()
            raise failed[0].exception()  # type: ignore[misc]

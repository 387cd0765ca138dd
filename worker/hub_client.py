"""The Hub side of a fetch: the few Hub calls the worker makes, their errors as reason codes, and byte progress.

:class:`HubClient` lists a repo's files at a commit (sizes and LFS sha256) and downloads some of them in parallel
with ``huggingface_hub``; its errors become the worker's reason-coded errors (not found, gated, invalid token).
:class:`ByteCounter` is the running total of a fetch's bytes, fed by Hub downloads (through a silent tqdm) and cache
downloads alike, and forwarded to the ``downloading_model`` progress report.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from tqdm.std import tqdm

from shared.hub_rules import hub_refusal
from worker.errors import HfTokenInvalidError, ModelGatedError, ModelNotFoundError, WorkerError

ProgressReport = Callable[[int, int], None]


class ByteCounter:
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


def _progress_tqdm(counter: ByteCounter) -> type[tqdm]:
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

    def download(self, model_id: str, revision: str, paths: list[str], dest: Path, counter: ByteCounter) -> None:
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

"""The shared model cache, read through a grant: the worker never holds the platform's bucket credentials.

In ``shared`` scope the worker POSTs a signed request (Standard Webhooks, with its callback secret, as for phase
reports) to ``VISGATE_CACHE_GRANT_URL``. The callback function checks the deployment was granted the shared cache at
provisioning and answers the manifest plus short-lived presigned GET URLs, one per file (docs/contracts.md
"Shared-cache grant"). The files then download through :class:`worker.cache_download.ModelDownloader` like any
cache read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import requests
import requests.adapters

from shared.cache_layout import Manifest
from shared.signing import sign_headers
from worker.cache import parse_manifest
from worker.cache_download import CHUNK_SIZE, DEFAULT_PART_SIZE, ModelDownloader, Progress, content_range_total
from worker.errors import CacheGrantRefusedError, CacheIntegrityError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


class PresignedObjects:
    """Repo files read through presigned GET URLs (ranged requests)."""

    def __init__(self, urls: Mapping[str, str], session: requests.Session, timeout_s: float = 60.0) -> None:
        self._urls = urls
        self._session = session
        self._timeout_s = timeout_s

    def read_range(self, path: str, start: int, stop: int) -> tuple[int | None, Iterator[bytes]]:
        """See :class:`worker.cache_download.ObjectSource`; an HTTP error status raises ``requests.HTTPError``.

        The errors name the URL without its query: the query is the signature and the access key id.
        """
        url = self._urls.get(path)
        if url is None:
            raise CacheIntegrityError(f"the cache grant has no URL for {path}")
        try:
            response = self._session.get(
                url, headers={"Range": f"bytes={start}-{stop - 1}"}, stream=True, timeout=self._timeout_s
            )
            response.raise_for_status()
        except requests.RequestException as exc:
            status = f"HTTP {exc.response.status_code}" if exc.response is not None else type(exc).__name__
            # `from None`: requests' own text (and so the chained traceback) quotes the whole URL.
            raise type(exc)(f"{status} reading {path} from {_without_query(url)}") from None
        return content_range_total(response.headers.get("Content-Range")), response.iter_content(CHUNK_SIZE)


def _without_query(url: str) -> str:
    return urlsplit(url)._replace(query="", fragment="").geturl()


class SharedCacheGrant:
    """The shared cache as the worker sees it: a manifest and URLs from the callback function, read-only."""

    def __init__(
        self,
        url: str,
        deployment_id: str,
        secret: str,
        *,
        session: requests.Session | None = None,
        concurrency: int = 16,
        part_size: int = DEFAULT_PART_SIZE,
        timeout_s: float = 30.0,
    ) -> None:
        """Ask ``url`` for grants as ``deployment_id``'s worker, signing with its callback ``secret``."""
        self._url = url
        self._deployment_id = deployment_id
        self._secret = secret
        if session is None:
            session = requests.Session()
            # One pooled connection per parallel ranged GET (requests keeps 10 per host by default).
            adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=concurrency)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self._session = session
        self._concurrency = concurrency
        self._part_size = part_size
        self._timeout_s = timeout_s
        self._urls: dict[str, str] = {}

    def read_manifest(self, model_id: str, revision: str) -> Manifest | None:
        """The cached manifest (None when the shared cache does not hold the model), with its URLs kept for
        :meth:`download`.

        Raises:
            CacheGrantRefusedError: the callback function refused the grant or did not answer.
            CacheIntegrityError: the answer is not a grant for this model.
        """
        body = json.dumps(
            {
                "schema_version": SCHEMA_VERSION,
                "deployment_id": self._deployment_id,
                "model_id": model_id,
                "revision": revision,
            },
            separators=(",", ":"),
        ).encode()
        headers = {"Content-Type": "application/json", **sign_headers(self._secret, body)}
        try:
            response = self._session.post(self._url, data=body, headers=headers, timeout=self._timeout_s)
        except requests.RequestException as exc:
            raise CacheGrantRefusedError(f"cache grant request failed: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 404:
            return None
        if not response.ok:
            raise CacheGrantRefusedError(f"cache grant refused (HTTP {response.status_code}): {response.text[:300]}")
        try:
            answer = response.json()
            manifest = parse_manifest(json.dumps(answer["manifest"]), model_id, revision)
            self._urls = {str(path): str(url) for path, url in dict(answer["urls"]).items()}
        except (ValueError, KeyError, TypeError) as exc:
            raise CacheIntegrityError(f"malformed cache grant: {exc}") from exc
        return manifest

    def download(self, manifest: Manifest, dest: Path, progress: Progress | None = None) -> None:
        """Download and verify the files of ``manifest`` through the granted URLs."""
        objects = PresignedObjects(self._urls, self._session)
        ModelDownloader(objects, concurrency=self._concurrency, part_size=self._part_size).download(
            manifest, dest, progress
        )

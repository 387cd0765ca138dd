"""The S3-compatible model cache: its client, the manifest as a cache holds it, and the ``private`` scope's store.

Layout: :mod:`shared.cache_layout` (docs/contracts.md). The manifest is written last, so its presence means every
file it lists was uploaded: readers treat "no manifest" as a miss. Works with any S3 API (AWS, R2, MinIO, GCS
interoperability, moto) through boto3. Reads of the files go through :class:`worker.cache_download.ModelDownloader`
(the one download path, shared with the ``shared`` scope's :mod:`worker.cache_grant`); an unreadable or corrupt
manifest, like any failed read, is a :class:`~worker.errors.CacheIntegrityError`: the caller falls back to the Hub.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from shared.cache_layout import MANIFEST_NAME, Manifest, ManifestFile, object_key
from worker.cache_download import (
    CHUNK_SIZE,
    DEFAULT_PART_SIZE,
    ModelDownloader,
    Progress,
    content_range_total,
    run_parallel,
)
from worker.errors import CacheIntegrityError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (no leading or trailing slash; may be empty)."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """Parse ``s3://bucket/prefix``."""
        if not url.startswith("s3://"):
            raise ValueError(f"not an s3:// URL: {url!r}")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"no bucket in {url!r}")
        return cls(bucket=bucket, prefix=prefix.strip("/"))


def make_s3_client(
    *,
    endpoint_url: str | None,
    access_key_id: str | None,
    secret_access_key: str | None,
    region: str | None,
    max_connections: int = 16,
) -> Any:
    """A boto3 S3 client whose connection pool fits ``max_connections`` parallel requests."""
    config = Config(
        signature_version="s3v4",
        max_pool_connections=max_connections,
        retries={"max_attempts": 5, "mode": "standard"},
        # Path-style addressing works with every S3-compatible server (MinIO, moto, R2), virtual-host does not.
        s3={"addressing_style": "path"},
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        region_name=region or "us-east-1",
        config=config,
    )


class _S3Objects:
    """The objects of one model in an S3 cache, read with the cache's own client."""

    def __init__(self, client: Any, bucket: str, key_of: Callable[[str], str]) -> None:
        self._client = client
        self._bucket = bucket
        self._key_of = key_of

    def read_range(self, path: str, start: int, stop: int) -> tuple[int | None, Iterator[bytes]]:
        response = self._client.get_object(
            Bucket=self._bucket, Key=self._key_of(path), Range=f"bytes={start}-{stop - 1}"
        )
        return content_range_total(response.get("ContentRange")), response["Body"].iter_chunks(CHUNK_SIZE)


class S3ModelCache:
    """Reads and writes one model cache location (the ``private`` scope, and the operator's populate command)."""

    def __init__(
        self,
        client: Any,
        location: S3Location,
        *,
        concurrency: int = 16,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> None:
        """Wrap ``client`` (a boto3 S3 client) for ``location``.

        Args:
            client: boto3 S3 client with a connection pool of at least ``concurrency``.
            location: bucket and prefix of the cache.
            concurrency: parallel requests for downloads and uploads.
            part_size: size of one ranged GET (and of one multipart upload part).
        """
        self._client = client
        self.location = location
        self._concurrency = concurrency
        self._part_size = part_size

    def key(self, model_id: str, revision: str, path: str) -> str:
        """The object key of one repo file (or of the manifest)."""
        return object_key(self.location.prefix, model_id, revision, path)

    def read_manifest(self, model_id: str, revision: str) -> Manifest | None:
        """The manifest of a model, or None when it is not (completely) cached.

        Raises:
            CacheIntegrityError: the manifest is unreadable (S3 error, not JSON, wrong shape, another model).
        """
        try:
            response = self._client.get_object(
                Bucket=self.location.bucket, Key=self.key(model_id, revision, MANIFEST_NAME)
            )
            return parse_manifest(response["Body"].read(), model_id, revision)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise CacheIntegrityError(f"cache manifest of {model_id}@{revision} unreadable: {exc}") from exc
        except BotoCoreError as exc:
            raise CacheIntegrityError(f"cache manifest of {model_id}@{revision} unreadable: {exc}") from exc

    def invalidate(self, model_id: str, revision: str) -> None:
        """Delete the manifest so that the next start treats this model as a miss and repopulates it (best effort:
        a cache that cannot be written is logged, the caller goes on to the Hub)."""
        try:
            self._client.delete_object(Bucket=self.location.bucket, Key=self.key(model_id, revision, MANIFEST_NAME))
        except (ClientError, BotoCoreError):
            logger.exception("could not delete the cache manifest of %s@%s", model_id, revision)
        else:
            logger.warning("cache manifest of %s@%s deleted", model_id, revision)

    def download(self, manifest: Manifest, dest: Path, progress: Progress | None = None) -> None:
        """Download and verify every file of ``manifest`` into ``dest`` (see :class:`ModelDownloader`)."""
        objects = _S3Objects(
            self._client, self.location.bucket, lambda path: self.key(manifest.model_id, manifest.revision, path)
        )
        downloader = ModelDownloader(objects, concurrency=self._concurrency, part_size=self._part_size)
        downloader.download(manifest, dest, progress)

    def upload(self, manifest: Manifest, src: Path, progress: Progress | None = None) -> None:
        """Upload every file of ``manifest`` from ``src``, then the manifest itself (last, so readers never see a
        manifest whose files are missing)."""
        transfer = TransferConfig(
            multipart_threshold=self._part_size,
            multipart_chunksize=self._part_size,
            max_concurrency=max(1, self._concurrency // 4),
            use_threads=True,
        )

        def upload_one(entry: ManifestFile) -> None:
            self._client.upload_file(
                str(src / entry.path),
                self.location.bucket,
                self.key(manifest.model_id, manifest.revision, entry.path),
                Config=transfer,
                Callback=progress,
            )

        run_parallel(upload_one, manifest.files, max(1, min(4, self._concurrency)))
        self._client.put_object(
            Bucket=self.location.bucket,
            Key=self.key(manifest.model_id, manifest.revision, MANIFEST_NAME),
            Body=json.dumps(manifest.model_dump(), indent=1).encode(),
            ContentType="application/json",
        )


def parse_manifest(raw: bytes | str, model_id: str, revision: str) -> Manifest:
    """A manifest read from a cache, checked to describe ``model_id`` at ``revision``.

    Raises:
        CacheIntegrityError: not a manifest, or one of another model.
    """
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as exc:
        raise CacheIntegrityError(f"cache manifest of {model_id}@{revision} is corrupt: {exc}") from exc
    if manifest.model_id != model_id or manifest.revision != revision:
        raise CacheIntegrityError(f"cache manifest at {model_id}@{revision} names another model")
    return manifest

"""Turn generated images into job output: base64 inline, or an upload to an output bucket and a presigned URL."""

from __future__ import annotations

import base64
import io
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from PIL.Image import Image

from worker.cache import make_s3_client
from worker.schemas import OutputFormat, S3Config
from worker.settings import PRESIGNED_URL_MAX_S, WorkerSettings

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def region_from_endpoint(endpoint_url: str | None) -> str | None:
    """The signing region an S3-compatible endpoint URL names, as the runpod SDK derives it, or None.

    ``s3.<region>.amazonaws.com`` and ``<bucket>.s3.<region>.amazonaws.com`` (also Backblaze's
    ``s3.<region>.backblazeb2.com``), the legacy ``s3-<region>.amazonaws.com``, DigitalOcean's
    ``<region>.digitaloceanspaces.com``, and Cloudflare R2 (``auto``). A SigV4 signature names its region, so a
    bucket outside us-east-1 refuses uploads signed for us-east-1.
    """
    host = (urlsplit(endpoint_url or "").hostname or "").lower()
    labels = host.split(".")
    if host.endswith(".r2.cloudflarestorage.com"):
        return "auto"
    if host.endswith(".digitaloceanspaces.com") and len(labels) >= 3:
        return labels[-3]
    for index, label in enumerate(labels[:-2]):
        if label == "s3" and labels[index + 1] not in {"amazonaws", "dualstack"}:
            return labels[index + 1]
        if label.startswith("s3-") and len(label) > 3:
            return label[3:]
    return None


def encode_image(image: Image, output_format: OutputFormat) -> bytes:
    """The image in ``output_format`` (lossy formats at quality 95)."""
    buffer = io.BytesIO()
    options = {} if output_format == "png" else {"quality": 95}
    image.save(buffer, format=output_format.upper(), **options)
    return buffer.getvalue()


def to_base64(data: bytes) -> str:
    """Plain base64 (no data: prefix), as Runpod workers conventionally return images."""
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class OutputBucket:
    """Where images are uploaded when a bucket is configured: keys ``[<key_prefix>/]<job id>/<name>.<ext>``."""

    client: Any
    bucket: str
    url_expiry_s: int
    key_prefix: str = ""  # no slash at either end; empty: keys start with the job id

    @classmethod
    def from_job(cls, s3_config: S3Config, key_prefix: str, url_expiry_s: int) -> OutputBucket:
        """The bucket a job names in Runpod's ``s3Config``."""
        client = make_s3_client(
            endpoint_url=s3_config.endpoint_url,
            access_key_id=s3_config.access_id,
            secret_access_key=s3_config.access_secret,
            region=region_from_endpoint(s3_config.endpoint_url),
            max_connections=4,
        )
        return cls(client=client, bucket=s3_config.bucket_name, url_expiry_s=url_expiry_s, key_prefix=key_prefix)

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> OutputBucket | None:
        """The bucket of the ``BUCKET_*`` env, or None; unnamed, it is ``%m-%y`` as in the runpod SDK.

        ``OUTPUT_S3_PREFIX`` is not applied: it is the prefix of the deployment's ``output_s3_url``, whose bucket
        the jobs name in ``s3Config``, while ``BUCKET_*`` is Runpod's own convention for a bucket set on the
        endpoint by hand, which names no prefix (keys start with the job id, as the runpod SDK's uploads do).
        """
        if not settings.output_bucket_configured:
            return None
        assert settings.bucket_access_key_id is not None and settings.bucket_secret_access_key is not None
        client = make_s3_client(
            endpoint_url=settings.bucket_endpoint_url,
            access_key_id=settings.bucket_access_key_id.get_secret_value(),
            secret_access_key=settings.bucket_secret_access_key.get_secret_value(),
            region=settings.bucket_region or region_from_endpoint(settings.bucket_endpoint_url),
            max_connections=4,
        )
        return cls(
            client=client,
            bucket=settings.bucket_name or time.strftime("%m-%y"),
            url_expiry_s=settings.output_url_expiry_s,
        )

    def upload(self, job_id: str, data: bytes, output_format: OutputFormat) -> str:
        """Store one image under ``[<key_prefix>/]<job id>/`` and return a presigned GET URL for it."""
        name = f"{job_id}/{uuid.uuid4().hex[:12]}.{output_format}"
        key = f"{self.key_prefix}/{name}" if self.key_prefix else name
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=CONTENT_TYPES[output_format])
        return str(
            self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.url_expiry_s
            )
        )


@dataclass(frozen=True)
class OutputBuckets:
    """Where a job's images go: the bucket the job names in ``s3Config`` (under ``OUTPUT_S3_PREFIX``), else the
    ``BUCKET_*`` one, else nowhere (inline base64). The defaults are those of an unconfigured worker."""

    job_key_prefix: str = ""
    url_expiry_s: int = PRESIGNED_URL_MAX_S
    env_bucket: OutputBucket | None = None

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> OutputBuckets:
        """The output buckets of ``OUTPUT_S3_PREFIX``, ``OUTPUT_URL_EXPIRY_S`` and the ``BUCKET_*`` env."""
        return cls(
            job_key_prefix=settings.output_s3_prefix,
            url_expiry_s=settings.output_url_expiry_s,
            env_bucket=OutputBucket.from_settings(settings),
        )

    def for_job(self, s3_config: S3Config | None) -> OutputBucket | None:
        """The bucket a job's images are uploaded to, or None for inline images."""
        if s3_config is None:
            return self.env_bucket
        return OutputBucket.from_job(s3_config, self.job_key_prefix, self.url_expiry_s)

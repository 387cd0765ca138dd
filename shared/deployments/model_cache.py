"""The platform's shared model cache as the callback function reads it: a manifest, and presigned GET URLs.

The layout is :mod:`shared.cache_layout`. Only this function holds the shared cache's (read-only) keys; workers get
time-limited URLs for the files of the one model their deployment was granted.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from shared.cache_layout import MANIFEST_NAME, Manifest, object_key


class SharedModelCache:
    """Reads manifests and presigns objects of the shared cache with the platform's read-only credentials (its S3
    client is built by shared.wiring.callback from ``MODEL_CACHE_S3_URL``)."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix.strip("/")

    def key(self, model_id: str, revision: str, path: str) -> str:
        """The object key of one repo file (or of the manifest)."""
        return object_key(self._prefix, model_id, revision, path)

    def manifest(self, model_id: str, revision: str) -> Manifest | None:
        """The manifest of a cached model, or None when the cache does not hold it.

        Raises:
            botocore.exceptions.ClientError: an S3 failure other than a missing manifest.
            pydantic.ValidationError: the manifest is not one.
        """
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=self.key(model_id, revision, MANIFEST_NAME))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise
        return Manifest.model_validate_json(response["Body"].read())

    def presigned_urls(self, manifest: Manifest, expires_s: int) -> dict[str, str]:
        """A GET URL per listed file, valid for ``expires_s`` seconds (signed locally: no request per file)."""
        return {
            item.path: str(
                self._client.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": self._bucket, "Key": self.key(manifest.model_id, manifest.revision, item.path)},
                    ExpiresIn=expires_s,
                )
            )
            for item in manifest.files
        }

"""The callback function's composition root: the phase-report and cache-grant API, and the shared cache's S3 client
(only this function holds its keys)."""

from __future__ import annotations

import boto3
from botocore.config import Config

from shared.callback.app import CallbackApi
from shared.config import CallbackSettings
from shared.deployments.model_cache import SharedModelCache
from shared.wiring import step_deps


def shared_model_cache(settings: CallbackSettings) -> SharedModelCache | None:
    """The cache ``MODEL_CACHE_S3_URL`` names, or None when the platform runs without one."""
    url = settings.model_cache_s3_url
    if not url:
        return None
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    key_id, secret = settings.model_cache_aws_access_key_id, settings.model_cache_aws_secret_access_key
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=settings.model_cache_aws_endpoint_url,
        aws_access_key_id=key_id.get_secret_value() if key_id else None,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        region_name=settings.model_cache_aws_region or "us-east-1",
        # Path-style works with every S3-compatible server (R2, MinIO, moto); SigV4 is what presigning needs.
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    return SharedModelCache(client, bucket, prefix)


def callback_app(settings: CallbackSettings) -> CallbackApi:
    return CallbackApi(step_deps(settings), shared_model_cache(settings))

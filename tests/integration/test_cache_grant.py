"""The shared model cache through grants: provisioning grants it (allowlist), the template carries no platform
keys, the callback function answers signed grant requests with presigned URLs, and the real worker fetch reads
the cache through them. Runs the functions host, the emulators and the simulators of tests/support/provisioning.py."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from shared.cache_layout import Manifest, ManifestFile
from shared.lifecycle import Status
from shared.models import CacheScope
from shared.signing import sign_headers
from tests.support.provisioning import GATED, HF_ACCEPTED, PIPE, Env
from worker.cache import S3Location, S3ModelCache, make_s3_client
from worker.cache_download import sha256_file
from worker.cache_grant import SharedCacheGrant
from worker.hub_client import HubClient
from worker.model_fetch import FetchRequest, fetch_model

PLATFORM_KEY_ID, PLATFORM_SECRET = "platform-read-only-key-id", "platform-read-only-secret"


@pytest.fixture(scope="module")
def shared_bucket(s3_server: str) -> Iterator[str]:
    """A fresh bucket as the platform's shared cache, with PIPE (not GATED) on the allowlist."""
    bucket = f"shared-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {
            "MODEL_CACHE_S3_URL": f"s3://{bucket}/models",
            "MODEL_CACHE_AWS_ENDPOINT_URL": s3_server,
            "MODEL_CACHE_AWS_ACCESS_KEY_ID": PLATFORM_KEY_ID,
            "MODEL_CACHE_AWS_SECRET_ACCESS_KEY": PLATFORM_SECRET,
            "MODEL_CACHE_SHARED_ALLOWLIST": f"{PIPE}, visgate-test/another",
        }.items():
            patch.setenv(key, value)
        yield bucket


@pytest.fixture
def g(shared_bucket: str, request: pytest.FixtureRequest) -> Env:
    """The provisioning environment, started after the shared-cache settings are in place."""
    return request.getfixturevalue("provisioning_env")  # type: ignore[no-any-return]


def _grant(e: Env, deployment_id: str, body: dict[str, Any], secret: str) -> requests.Response:
    raw = json.dumps({"schema_version": 1, **body}).encode()
    headers = {"Content-Type": "application/json", **sign_headers(secret, raw)}
    url = f"{e.functions}/callback/v1/deployments/{deployment_id}/cache-grant"
    return requests.post(url, data=raw, headers=headers, timeout=10)


def _ready(e: Env, model: str = PIPE, hf_token: str | None = None) -> tuple[str, dict[str, Any], dict[str, str]]:
    key = e.account()
    deployment_id = e.create(key, model=model, hf_token=hf_token, cache_scope=CacheScope.SHARED)
    e.provision(deployment_id)
    doc = e.wait_status(deployment_id, Status.READY)
    template_env = e.runpod_state(key)["endpoints"][0]["env"]
    return deployment_id, doc, template_env


def _populate(s3_endpoint: str, bucket: str, models_root: Path, model_id: str, revision: str) -> Manifest:
    """What the operator's populate command leaves in the shared cache."""
    folder = models_root / model_id
    files = sorted(path for path in folder.rglob("*") if path.is_file() and not path.name.startswith("."))
    manifest = Manifest(
        model_id=model_id,
        revision=revision,
        files=[
            ManifestFile(path=str(path.relative_to(folder)), size=path.stat().st_size, sha256=sha256_file(path))
            for path in files
        ],
    )
    client = make_s3_client(endpoint_url=s3_endpoint, access_key_id="op", secret_access_key="op", region=None)
    S3ModelCache(client, S3Location(bucket, "models")).upload(manifest, folder)
    return manifest


def test_granted_worker_reads_the_shared_cache_through_presigned_urls(
    g: Env, s3_server: str, shared_bucket: str, models_root: Path, tmp_path: Path
) -> None:
    deployment_id, doc, template_env = _ready(g)
    assert doc.shared_cache_granted is True
    # The template lives in the user's Runpod account: no platform key, no bucket, only where to ask.
    assert template_env["MODEL_CACHE_SCOPE"] == "shared"
    grant_url = template_env["VISGATE_CACHE_GRANT_URL"]
    assert grant_url.endswith(f"/callback/v1/deployments/{deployment_id}/cache-grant")
    assert not [name for name in template_env if name.startswith("MODEL_CACHE_") and name != "MODEL_CACHE_SCOPE"]
    assert not {PLATFORM_KEY_ID, PLATFORM_SECRET, shared_bucket} & {*template_env.values()}
    assert not any(shared_bucket in value for value in template_env.values())

    assert _grant(g, deployment_id, _asked(deployment_id, doc), g.callback_secret(deployment_id)).status_code == 404
    manifest = _populate(s3_server, shared_bucket, models_root, PIPE, doc.model_commit_sha)

    request = FetchRequest(PIPE, doc.model_commit_sha, tmp_path, device="cpu", scope="shared")
    grant = SharedCacheGrant(grant_url, deployment_id, template_env["VISGATE_CALLBACK_SECRET"], part_size=64)
    result = fetch_model(request, HubClient("http://127.0.0.1:9", None), grant)  # the Hub is unreachable

    assert result.source == "cache"
    expected = {item.path: item.sha256 for item in manifest.files if not item.path.endswith(".fp16.safetensors")}
    assert {item.path: item.sha256 for item in result.manifest.files} == expected  # CPU: plain weights only
    for path, digest in expected.items():
        assert sha256_file(result.path / path) == digest
    answer = _grant(g, deployment_id, _asked(deployment_id, doc), g.callback_secret(deployment_id)).json()
    assert answer["expires_in_s"] == 3600
    assert set(answer["urls"]) == {item.path for item in manifest.files}
    assert all("X-Amz-Expires=3600" in url for url in answer["urls"].values())


def _asked(deployment_id: str, doc: dict[str, Any]) -> dict[str, Any]:
    return {"deployment_id": deployment_id, "model_id": doc.hf_model_id, "revision": doc.model_commit_sha}


def test_grants_are_refused(g: Env, s3_server: str, shared_bucket: str, models_root: Path) -> None:
    target, doc, _ = _ready(g)
    other, other_doc, _ = _ready(g)
    _populate(s3_server, shared_bucket, models_root, PIPE, doc.model_commit_sha)
    asked = _asked(target, doc)
    secret = g.callback_secret(target)
    assert _grant(g, target, asked, secret).status_code == 200

    forged = _grant(g, target, asked, "whsec_" + base64.b64encode(b"x" * 32).decode())
    another_deployments_secret = _grant(g, target, asked, g.callback_secret(other))
    about_another_deployment = _grant(g, target, _asked(other, other_doc), secret)
    assert [r.status_code for r in (forged, another_deployments_secret, about_another_deployment)] == [401] * 3
    assert forged.json()["error"]["code"] == "invalid_signature"

    another_revision = _grant(g, target, {**asked, "revision": "f" * 40}, secret)
    assert another_revision.status_code == 403
    assert "another model or revision" in another_revision.json()["error"]["message"]

    # A model off the allowlist is not granted at provisioning, so its template does not even ask.
    gated, gated_doc, gated_env = _ready(g, model=GATED, hf_token=HF_ACCEPTED)
    assert gated_doc.shared_cache_granted is False
    assert gated_env["MODEL_CACHE_SCOPE"] == "off"
    not_allowlisted = _grant(g, gated, _asked(gated, gated_doc), g.callback_secret(gated))
    assert not_allowlisted.status_code == 403
    assert not_allowlisted.json()["error"]["code"] == "cache_not_granted"

    # No worker starts while the deployment is stopped (a start reports downloading_model first).
    g.move(target, Status.STOPPED)
    wrong_state = _grant(g, target, asked, secret)
    assert wrong_state.status_code == 403
    assert "status stopped" in wrong_state.json()["error"]["message"]

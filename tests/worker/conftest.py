"""Fixtures for the worker tests: tiny models, the Hub simulator and a moto S3 server, all local and offline."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import HfApi
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from scripts.build_tiny_models import build_all
from shared.signing import new_secret, verify
from simulators.hub.app import create_app
from worker.cache import S3Location, S3ModelCache, make_s3_client

PUBLIC = "visgate-tiny/sd-tiny"
GATED = "visgate-tiny/sd-tiny-gated"
PRIVATE = "visgate-tiny/sd-tiny-private"
NOT_A_PIPELINE = "visgate-tiny/text-encoder-only"
FP16 = "visgate-tiny/sd-tiny-fp16"


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Hub simulator's models folder with the tiny repos of docs/contracts.md."""
    root = tmp_path_factory.mktemp("hub-models")
    build_all(root)
    return root


@pytest.fixture(scope="session")
def hub_url(models_root: Path) -> Iterator[str]:
    """Base URL of a Hub simulator serving ``models_root`` from a background thread."""
    server = make_server("127.0.0.1", 0, create_app(models_root), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


@pytest.fixture(scope="session")
def hub_revisions(hub_url: str) -> dict[str, str]:
    """The commit sha the simulator derives for each tiny repo."""
    api = HfApi(endpoint=hub_url, token="hf_tiny_owner")
    return {repo: str(api.model_info(repo).sha) for repo in (PUBLIC, PRIVATE, NOT_A_PIPELINE, FP16)} | {
        GATED: str(HfApi(endpoint=hub_url).model_info(GATED).sha)
    }


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server (a real S3 HTTP API) on a free port."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_client(s3_endpoint: str) -> Any:
    """A boto3 client for the moto server (moto accepts any credentials)."""
    return make_s3_client(endpoint_url=s3_endpoint, access_key_id="test", secret_access_key="test", region="us-east-1")


@pytest.fixture
def bucket(s3_client: Any) -> str:
    """A fresh bucket per test, so tests never share cache state."""
    name = f"cache-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def cache(s3_client: Any, bucket: str) -> S3ModelCache:
    """The model cache at ``s3://<bucket>/models`` with small parts, so ranged multi-part paths run."""
    return S3ModelCache(s3_client, S3Location(bucket, "models"), concurrency=8, part_size=1024 * 1024)


@dataclass
class Callback:
    """A callback endpoint that verifies signatures and records reports; ``answers`` scripts its first replies."""

    secret: str
    url: str = ""
    reports: list[dict[str, Any]] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)

    def __call__(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_data()
        msg_id = verify(self.secret, dict(request.headers), body)
        self.message_ids.append(msg_id)
        status = self.answers.pop(0) if self.answers else 204
        if status == 204:
            self.reports.append(json.loads(body))
        return Response(status=status)(environ, start_response)

    @property
    def phases(self) -> list[str]:
        return [report["phase"] for report in self.reports]


@pytest.fixture
def callback() -> Iterator[Callback]:
    receiver = Callback(secret=new_secret())
    server = make_server("127.0.0.1", 0, receiver, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_port}/callback/dep-1"
    yield receiver
    server.shutdown()
    thread.join()

"""The real worker process under the runpod SDK job loop, driven by the Runpod simulator in process mode."""

from __future__ import annotations

import base64
import io
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image
from werkzeug.serving import make_server

from simulators.runpod.app import create_app
from tests.worker.conftest import PUBLIC, Callback


@dataclass
class Runpod:
    """A served Runpod simulator and one account."""

    url: str
    api_key: str

    def v2(self, method: str, path: str, **kwargs: Any) -> Any:
        response = requests.request(
            method, f"{self.url}/v2/{path}", headers={"Authorization": f"Bearer {self.api_key}"}, **kwargs
        )
        response.raise_for_status()
        return response.json()


@pytest.fixture
def runpod(tmp_path: Path) -> Iterator[Runpod]:
    """The Runpod simulator launching ``python -m worker.main`` as each worker (the real SDK loop)."""
    api_key = f"rpa_{uuid.uuid4().hex}"
    app = create_app(
        api_keys=[api_key],
        worker_mode="process",
        worker_command=[sys.executable, "-m", "worker.main"],
        log_dir=tmp_path / "runpod",
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    app.set_base_url(url)
    try:
        yield Runpod(url=url, api_key=api_key)
    finally:
        app.shutdown()
        server.shutdown()
        server.server_close()
        thread.join()


def _worker_log(runpod: Runpod) -> str:
    state = requests.get(f"{runpod.url}/_sim/state", timeout=5).json()
    account = next(a for a in state["accounts"] if a["api_key"] == runpod.api_key)
    return "\n".join(Path(worker["logPath"]).read_text()[-4000:] for worker in account["workers"])


def test_worker_reports_phases_and_serves_jobs_under_the_sdk_loop(
    runpod: Runpod, callback: Callback, hub_url: str, hub_revisions: dict[str, str], tmp_path: Path
) -> None:
    env = {
        "VISGATE_DEPLOYMENT_ID": "dep-loop",
        "VISGATE_CALLBACK_URL": callback.url,
        "VISGATE_CALLBACK_SECRET": callback.secret,
        "HF_MODEL_ID": PUBLIC,
        "HF_MODEL_REVISION": hub_revisions[PUBLIC],
        "HF_ENDPOINT": hub_url,
        "MODEL_CACHE_SCOPE": "off",
        "WORKER_MODEL_DIR": str(tmp_path / "models"),
    }
    endpoint = {
        "name": "visgate-loop",
        "type": "QUEUE",
        "image": "visgate/worker:test",
        "env": env,
        "gpu": {"pools": ["ADA_24"]},
        "workers": {"min": 0, "max": 1},
        "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4},
    }
    endpoint_id = runpod.v2("POST", "serverless", json=endpoint, timeout=10)["id"]

    warmup = runpod.v2("POST", f"{endpoint_id}/run", json={"input": {"warmup": True}}, timeout=10)
    job = {"input": {"prompt": "a photo of a cat", "num_inference_steps": 2, "seed": 11}}
    done = runpod.v2("POST", f"{endpoint_id}/runsync", params={"wait": 150_000}, json=job, timeout=160)
    assert done["status"] == "COMPLETED", (done, _worker_log(runpod))
    image = Image.open(io.BytesIO(base64.b64decode(done["output"]["images"][0]["image"])))
    assert (image.format, image.size) == ("PNG", (64, 64))
    assert done["output"]["images"][0]["seed"] == 11

    warm = runpod.v2("GET", f"{endpoint_id}/status/{warmup['id']}", timeout=10)
    assert warm["status"] == "COMPLETED"
    assert warm["output"] == {"warmup": True}

    bad = runpod.v2(
        "POST", f"{endpoint_id}/runsync", params={"wait": 30_000}, json={"input": {"prompt": ""}}, timeout=40
    )
    assert bad["status"] == "FAILED"
    assert "invalid input: prompt" in bad["error"]

    assert callback.phases[0] == "downloading_model"
    assert callback.phases[-2:] == ["loading_model", "ready"]
    assert {report["deployment_id"] for report in callback.reports} == {"dep-loop"}
    assert callback.reports[-1]["gpu_type_id"]  # the pool Runpod placed the worker in

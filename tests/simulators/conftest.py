"""Fixtures for the simulator tests: each simulator is served on a free local port in a background thread."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from simulators.runpod import openapi_contract
from simulators.runpod.app import RunpodSimApp, create_app
from tests.support.runpod_contract import contract_violations

IMAGE = "visgate/worker@sha256:" + "0" * 64


@dataclass
class RunpodSimClient:
    """A served Runpod simulator and a registered account's key."""

    url: str
    app: RunpodSimApp
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        """Bearer auth for this account."""
        return {"Authorization": f"Bearer {self.api_key}"}

    def v2(self, method: str, path: str, api_key: str | None = None, **kwargs: Any) -> requests.Response:
        """Call ``<base>/v2/<path>`` (control plane or data plane) as this account (or as ``api_key``)."""
        headers = {"Authorization": f"Bearer {api_key or self.api_key}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.url}/v2/{path}", headers=headers, timeout=30, **kwargs)

    def create_body(
        self, env: dict[str, str] | None = None, pools: tuple[str, ...] = ("ADA_24",), **fields: Any
    ) -> dict[str, Any]:
        """A valid ``CreateEndpointRequest`` with these fields set."""
        body: dict[str, Any] = {
            "name": f"visgate-{uuid.uuid4().hex[:12]}",
            "image": IMAGE,
            "type": "QUEUE",
            "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4},
            "gpu": {"pools": list(pools)},
        }
        if env is not None:
            body["env"] = env
        return body | fields

    def create_endpoint(
        self, env: dict[str, str] | None = None, pools: tuple[str, ...] = ("ADA_24",), **fields: Any
    ) -> str:
        """``POST /v2/serverless``; returns the new endpoint's id."""
        response = self.v2("POST", "serverless", json=self.create_body(env, pools, **fields))
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def patch(self, endpoint_id: str, **fields: Any) -> dict[str, Any]:
        """``PATCH /v2/serverless/{id}``; returns the updated endpoint."""
        response = self.v2("PATCH", f"serverless/{endpoint_id}", json=fields)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def workers(self, endpoint_id: str) -> dict[str, Any]:
        """``GET /v2/serverless/{id}/workers``."""
        response = self.v2("GET", f"serverless/{endpoint_id}/workers")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def scenario(self, **changes: Any) -> None:
        """Set scenario controls."""
        requests.post(f"{self.url}/_sim/scenario", json=changes, timeout=5).raise_for_status()

    def state(self) -> dict[str, Any]:
        """``/_sim/state`` of this account."""
        state = requests.get(f"{self.url}/_sim/state", timeout=5).json()
        return next(a for a in state["accounts"] if a["api_key"] == self.api_key)


def serve(app: Any) -> tuple[str, Any, threading.Thread]:
    """Serve a WSGI app on a free port in a background thread."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{server.server_port}", server, thread


@pytest.fixture
def runpod_contract() -> openapi_contract.Contract:
    """Runpod's REST v2 OpenAPI document; skips the test (saying where the document comes from) when absent."""
    reason = openapi_contract.missing_reason()
    if reason:
        pytest.skip(reason)
    return openapi_contract.default_contract()


@pytest.fixture
def runpod_sim() -> Iterator[RunpodSimClient]:
    """A fresh Runpod simulator (instant workers) with one registered account.

    Control-plane exchanges are recorded; where Runpod's OpenAPI document is available they are checked against
    it when the test ends (see ``test_runpod_contract.py`` for the check that says when it cannot run).
    """
    api_key = f"rpa_{uuid.uuid4().hex}"
    app = create_app(api_keys=[api_key])
    app.exchanges = []
    url, server, thread = serve(app)
    app.set_base_url(url)
    try:
        yield RunpodSimClient(url=url, app=app, api_key=api_key)
    finally:
        app.shutdown()
        server.shutdown()
        server.server_close()
        thread.join()
    if openapi_contract.missing_reason() is None:
        assert contract_violations(app.exchanges) == []


@dataclass
class Receiver:
    """A small HTTP server that records POSTs (stands in for the callback function)."""

    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, timeout: float = 10) -> list[tuple[dict[str, str], bytes]]:
        """Block until ``count`` requests arrived."""
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.received) >= count, timeout), self.received
            return list(self.received)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A local HTTP receiver answering 204 to every POST."""
    recorder = Receiver(url="")

    @Request.application
    def app(request: Request) -> Response:
        with recorder.arrived:
            recorder.received.append((dict(request.headers), request.get_data()))
            recorder.arrived.notify_all()
        return Response(status=204)

    url, server, thread = serve(app)
    recorder.url = f"{url}/callback"
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

"""Fixtures for the simulator tests: each simulator is served on a free local port in a background thread."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from simulators.runpod.app import RunpodSimApp, create_app

SAVE_TEMPLATE = """
mutation SaveTemplate($input: SaveTemplateInput) {
  saveTemplate(input: $input) { id name imageName isServerless env { key value } }
}
"""
SAVE_ENDPOINT = """
mutation SaveEndpoint($input: EndpointInput) {
  saveEndpoint(input: $input) {
    id name templateId gpuIds idleTimeout scalerType scalerValue workersMin workersMax gpuCount flashBootType
  }
}
"""


def wait_until(predicate: Callable[[], Any], timeout: float = 10, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


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

    def graphql(self, query: str, variables: dict[str, Any] | None = None, api_key: str | None = None) -> Any:
        """POST one GraphQL document; returns the response (callers check status and JSON)."""
        headers = {"Authorization": f"Bearer {api_key or self.api_key}"}
        return requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables}, headers=headers)

    def v2(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Call the data plane as this account."""
        return requests.request(method, f"{self.url}/v2/{path}", headers=self.headers, timeout=30, **kwargs)

    def create_endpoint(self, env: dict[str, str] | None = None, **fields: Any) -> tuple[str, str]:
        """Create a serverless template and an endpoint on it; returns (template id, endpoint id)."""
        name = fields.pop("name", f"visgate-{uuid.uuid4().hex[:12]}")
        template = {
            "name": name,
            "imageName": "visgate/worker@sha256:" + "0" * 64,
            "isServerless": True,
            "env": [{"key": k, "value": v} for k, v in (env or {}).items()],
        }
        response = self.graphql(SAVE_TEMPLATE, {"input": template})
        template_id = response.json()["data"]["saveTemplate"]["id"]
        endpoint = {"name": name, "templateId": template_id, "gpuIds": "ADA_24", **fields}
        response = self.graphql(SAVE_ENDPOINT, {"input": endpoint})
        assert "errors" not in response.json(), response.json()
        return template_id, response.json()["data"]["saveEndpoint"]["id"]

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
def runpod_sim() -> Iterator[RunpodSimClient]:
    """A fresh Runpod simulator (instant workers) with one registered account."""
    api_key = f"rpa_{uuid.uuid4().hex}"
    app = create_app(api_keys=[api_key])
    url, server, thread = serve(app)
    app.set_base_url(url)
    try:
        yield RunpodSimClient(url=url, app=app, api_key=api_key)
    finally:
        app.shutdown()
        server.shutdown()
        server.server_close()
        thread.join()


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

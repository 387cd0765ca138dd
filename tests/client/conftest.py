"""Fixtures for the client and the CLI: the session's local stack, a cutting proxy, one ready deployment."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
import requests
from visgate_client import Client, Deployment, Update

from local.stack import DEMO_API_KEY, DEMO_MODEL
from tests.support.stack import RunningStack

MISSING_MODEL = "visgate-tiny/no-such-model"  # not on the Hub simulator: fails with model_not_found
TINY_JOB = {"prompt": "a watercolor fox", "seed": 7, "num_inference_steps": 2, "width": 64, "height": 64}


class CuttingProxy:
    """A TCP proxy in front of the functions host whose open connections a test can cut (both ways, at once)."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self.requests_seen: list[bytes] = []  # the first bytes of each request on every connection
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._upstream)
            with self._lock:
                self._open += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, from_client: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if from_client and data[:4] in (b"GET ", b"POST", b"DELE"):
                    with self._lock:
                        self.requests_seen.append(data[:2048])
                target.sendall(data)
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Close every open connection mid-way, as a network failure would."""
        with self._lock:
            sockets, self._open = self._open, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def stream_requests(self) -> list[bytes]:
        with self._lock:
            return [request for request in self.requests_seen if b"/stream " in request.split(b"\r\n", 1)[0]]

    def close(self) -> None:
        self._listener.close()
        self.cut()


@dataclass
class ReadyDeployment:
    """The session's ready deployment of the demo model, and how its wait went through a cut stream."""

    deployment: Deployment
    updates: list[Update] = field(default_factory=list)
    stream_requests: list[bytes] = field(default_factory=list)


@pytest.fixture(scope="session")
def api_url(local_stack: RunningStack) -> str:
    return local_stack.intake_url


@pytest.fixture(scope="session")
def client(api_url: str) -> Iterator[Client]:
    with Client(api_url, DEMO_API_KEY) as c:
        yield c


@pytest.fixture
def fresh_client(api_url: str, local_stack: RunningStack) -> Iterator[Client]:
    """A client with a key of its own (a tenant with no deployments yet), registered with the Runpod simulator: the
    API verifies every new key with Runpod."""
    api_key = f"rp_test_{uuid.uuid4().hex}"
    runpod = local_stack.env["RUNPOD_API_BASE_URL"]
    requests.post(f"{runpod}/_sim/accounts", json={"api_key": api_key}, timeout=5).raise_for_status()
    with Client(api_url, api_key) as c:
        yield c


@pytest.fixture(scope="session")
def ready(local_stack: RunningStack) -> Iterator[ReadyDeployment]:
    """Deploy the demo model through a proxy that cuts the event stream after its first event; wait for ready."""
    proxy = CuttingProxy(local_stack.functions_url)
    path = urlsplit(local_stack.intake_url).path
    with Client(proxy.url + path, DEMO_API_KEY) as proxied:
        deployment = proxied.deploy(DEMO_MODEL)
        record = ReadyDeployment(deployment)
        for update in deployment.watch(timeout=300):
            record.updates.append(update)
            if len(record.updates) == 1:
                proxy.cut()
        record.stream_requests = proxy.stream_requests()
    proxy.close()
    assert deployment.status == "ready", deployment.view
    with Client(local_stack.intake_url, DEMO_API_KEY) as direct:
        record.deployment = direct.get(deployment.id)
        yield record
        with contextlib.suppress(requests.RequestException):
            record.deployment.delete(wait=True, timeout=120)

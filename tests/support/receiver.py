"""A webhook receiver on 127.0.0.1 for the tests: it records each call and answers a script of status codes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.waiting import eventually


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 answering a script of status codes (``"slow"``: no answer in time)."""

    script: list[Any] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait(self, count: int, timeout_s: float = 20.0) -> list[dict[str, Any]]:
        eventually(
            lambda: len(self.calls) >= count, timeout_s, what=lambda: f"{len(self.calls)} calls, expected {count}"
        )
        return self.calls


@contextmanager
def serve_receiver() -> Iterator[Receiver]:
    """A :class:`Receiver` served on a free port for the duration of the block."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            step = state.script.pop(0) if state.script else 200
            state.calls.append({"headers": dict(self.headers), "body": body, "answer": step})
            if step == "slow":
                time.sleep(2.5)
                step = 200
            self.send_response(int(step))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serve_receiver() as state:
        yield state

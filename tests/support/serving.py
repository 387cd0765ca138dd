"""Serving a WSGI app (a simulator, the functions host) on a local port for the duration of a test."""

from __future__ import annotations

import threading
from typing import Any

from werkzeug.serving import make_server

from local.processes import free_port


class Served:
    """A WSGI app on a local port in a background thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self._server = make_server("127.0.0.1", self.port, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)

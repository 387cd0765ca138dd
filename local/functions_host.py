"""One local process that serves every declared Cloud Function, each on its own path (``/intake``, ...).

Each function is a real functions-framework app (``create_app``), mounted with werkzeug's DispatcherMiddleware.
Two things production does in front of a function are done here:

* the Pub/Sub emulator pushes the raw push body; in production Eventarc delivers it as a CloudEvent. Pushes to
  ``/<function>/_pubsub/<topic>`` (see ``PushSubscription.push_path``) are turned into a binary-mode CloudEvent
  whose body stays the push body (``{"message": ..., "subscription": ...}``), as Eventarc does;
* ``POST /intake`` (no trailing slash) would get a 308 from werkzeug's routing; it is served as ``/intake/``.

Run: ``python -m local.functions_host --port 8080 [--topology shared.topology] [--source-root functions]``.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import functions_framework
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from local.processes import LOOPBACK, REPO_ROOT
from shared import logging as slog
from shared.topology import Function

logger = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

HEALTH_PATH = "/_host/health"
PUBSUB_EVENT_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"
_PUSH_PATH = re.compile(r"^/(?P<function>[^/]+)/_pubsub/(?P<topic>[^/]+)/?$")


class RootPath:
    """Serves a mounted app's own root for an empty path, so ``POST /fn`` reaches it instead of a 308 to ``/fn/``."""

    def __init__(self, app: WSGIApp) -> None:
        self._app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not environ.get("PATH_INFO"):
            environ["PATH_INFO"] = "/"
        return self._app(environ, start_response)


class PubSubPushToCloudEvent:
    """Turns the Pub/Sub emulator's raw push into the binary-mode CloudEvent that Eventarc would deliver."""

    def __init__(self, app: WSGIApp, project: str) -> None:
        self._app = app
        self._project = project

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        match = _PUSH_PATH.match(environ.get("PATH_INFO", ""))
        if match is None or environ.get("REQUEST_METHOD") != "POST":
            return self._app(environ, start_response)
        body = Request(environ).get_data()
        try:
            push = json.loads(body)
            message = push["message"]
            message_id = str(message["messageId"])
        except (ValueError, KeyError, TypeError):
            logger.warning("rejected a push to %s that is not a Pub/Sub push body", environ["PATH_INFO"])
            return Response("not a Pub/Sub push body", status=400)(environ, start_response)
        # Eventarc's body carries both spellings of the message fields; the emulator's push does too, but a test
        # posting by hand may not.
        message.setdefault("message_id", message_id)
        if "publishTime" in message:
            message.setdefault("publish_time", message["publishTime"])
        payload = json.dumps({"message": message, "subscription": push.get("subscription", "")}).encode()
        environ.update(
            {
                "PATH_INFO": f"/{match['function']}",
                "CONTENT_TYPE": "application/json",
                "CONTENT_LENGTH": str(len(payload)),
                "wsgi.input": io.BytesIO(payload),
                "HTTP_CE_ID": message_id,
                "HTTP_CE_SOURCE": f"//pubsub.googleapis.com/projects/{self._project}/topics/{match['topic']}",
                "HTTP_CE_TYPE": PUBSUB_EVENT_TYPE,
                "HTTP_CE_SPECVERSION": "1.0",
            }
        )
        if "publishTime" in message:
            environ["HTTP_CE_TIME"] = str(message["publishTime"])
        return self._app(environ, start_response)


def source_of(function: Function, source_root: Path) -> Path:
    """The entry module of ``function`` under ``source_root`` (``<root>/<name>/main.py``)."""
    return source_root / function.source / "main.py"


def create_host_app(functions: Sequence[Function], source_root: Path, project: str) -> WSGIApp:
    """The WSGI app serving every function of ``functions`` whose source exists; the others are skipped."""
    mounts: dict[str, WSGIApp] = {}
    for function in functions:
        source = source_of(function, source_root)
        if not source.is_file():
            logger.warning("function %s skipped: %s does not exist yet", function.name, source)
            continue
        app = functions_framework.create_app(
            target=function.target, source=str(source), signature_type=function.signature
        )
        mounts[function.path] = RootPath(app)
        logger.info("serving %s (%s) at %s", function.name, function.signature, function.path)
    served = sorted(mounts)

    def host_root(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == HEALTH_PATH:
            body = json.dumps({"status": "ok", "functions": served})
            return Response(body, mimetype="application/json")(environ, start_response)
        return Response("no function at this path", status=404)(environ, start_response)

    return PubSubPushToCloudEvent(DispatcherMiddleware(host_root, mounts), project)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the functions until terminated."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topology", default="shared.topology", help="module declaring FUNCTIONS")
    parser.add_argument("--source-root", type=Path, default=REPO_ROOT / "functions")
    parser.add_argument("--project", default="visgate-local")
    parser.add_argument("--processes", type=int, default=1, help="more than 1 serves with gunicorn")
    parser.add_argument("--threads", type=int, default=16, help="threads per process (gunicorn)")
    args = parser.parse_args(argv)
    # The functions log JSON lines (shared.logging); the host logs the same way, once per record.
    slog.configure()
    # One line per request would cost more than the benchmark can afford; errors still show.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    topology = importlib.import_module(args.topology)
    if args.processes > 1:
        serve_multiprocess(args, topology.FUNCTIONS)
        return
    app = create_host_app(topology.FUNCTIONS, args.source_root, args.project)
    server = make_server(args.host, args.port, app, threaded=True)
    logger.info("functions host listening on http://%s:%s", args.host, args.port)
    server.serve_forever()


def serve_multiprocess(args: argparse.Namespace, functions: Sequence[Function]) -> None:
    """Serve with gunicorn: several processes, each with every function, as Cloud Run runs several instances.

    One Python process holds one GIL; the intake, provision and callback work of a busy stack needs more than one
    core's worth of Python, which production gets from separate instances.
    """
    from gunicorn.app.base import BaseApplication

    class HostApplication(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{args.host}:{args.port}")
            self.cfg.set("workers", args.processes)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", args.threads)
            self.cfg.set("loglevel", "warning")

        def load(self) -> WSGIApp:
            return create_host_app(functions, args.source_root, args.project)

    logger.info("functions host listening on http://%s:%s (%d processes)", args.host, args.port, args.processes)
    HostApplication().run()


if __name__ == "__main__":
    main()

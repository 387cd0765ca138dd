"""Serve the Runpod simulator: ``python -m simulators.runpod --host 127.0.0.1 --port N``.

Prints ``RUNPOD_SIMULATOR_URL=<base>`` once listening; SIGTERM or SIGINT stop the server and every worker process.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import threading
from types import FrameType

from werkzeug.serving import make_server

from simulators.runpod.app import create_app


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, serve until signalled, then shut the workers down."""
    parser = argparse.ArgumentParser(prog="python -m simulators.runpod", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--worker-mode", choices=("process", "instant"), default="process")
    parser.add_argument("--worker-command", help='worker argv as one shell-quoted string, e.g. "python -m worker.main"')
    parser.add_argument("--api-key", action="append", default=[], help="pre-registered API key (repeatable)")
    args = parser.parse_args(argv)

    command = shlex.split(args.worker_command) if args.worker_command else None
    app = create_app(api_keys=args.api_key, worker_mode=args.worker_mode, worker_command=command)
    server = make_server(args.host, args.port, app, threaded=True)
    url = f"http://{args.host}:{server.server_port}"
    app.set_base_url(url)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        # serve_forever() runs in this thread: shutdown() must be called from another one.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"RUNPOD_SIMULATOR_URL={url}", flush=True)
    try:
        server.serve_forever()
    finally:
        app.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()

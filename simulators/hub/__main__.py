"""Run the Hub simulator: `python -m simulators.hub --models-root DIR --host 127.0.0.1 --port N`.

Prints one line `HUB_SIMULATOR_URL=http://host:port` on stdout once listening (port 0 picks a free port).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from werkzeug.serving import make_server

from simulators.hub.app import create_app


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and serve until interrupted.

    Args:
        argv: command-line arguments (defaults to sys.argv).
    """
    parser = argparse.ArgumentParser(prog="python -m simulators.hub", description=__doc__)
    parser.add_argument("--models-root", type=Path, required=True, help="folder of <org>/<name>/ repos")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.models_root.is_dir():
        parser.error(f"--models-root {args.models_root} is not a folder")
    server = make_server(args.host, args.port, create_app(args.models_root.resolve()), threaded=True)
    # The one line callers wait for; flushed because stdout is a pipe when the local stack starts us.
    print(f"HUB_SIMULATOR_URL=http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()

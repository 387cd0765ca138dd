"""bench/webhooks: from a ``ready`` transition to its signed webhook arriving at a local receiver (20 deployments).

Each deployment (instant worker) is POSTed with ``user_webhook_url`` pointing at a receiver on 127.0.0.1; latency =
the receiver's arrival time - the ``ready`` timestamp the deployment carries (``data.phase_timestamps.ready``, the
time of the transition, written by the callback function). The path measured: the transition's publish on
``deployment-events``, the Pub/Sub push to the webhooks function, the delivery record, the Cloud Task, the signed
POST. One deployment at a time. Everything the run created is deleted at the end. Run with `make bench`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.stack import bench_run, percentile

DEPLOYMENTS = 20
TIMEOUT_S = 60.0


class Receiver:
    """Collects webhook arrivals: deployment id → (arrival time, body) of its ``deployment.ready``."""

    def __init__(self) -> None:
        self.ready: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.time()
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self.send_response(204)
                self.end_headers()
                if body.get("type") == "deployment.ready":
                    with receiver._lock:
                        receiver.ready[body["data"]["deployment_id"]] = (arrived, body)
                        receiver._lock.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def wait(self, deployment_id: str, timeout_s: float) -> tuple[float, dict[str, Any]]:
        with self._lock:
            if not self._lock.wait_for(lambda: deployment_id in self.ready, timeout=timeout_s):
                raise TimeoutError(f"no ready webhook for {deployment_id} after {timeout_s:.0f} s")
            return self.ready[deployment_id]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, default=Path(".local/stack.env"))
    parser.add_argument("--count", type=int, default=DEPLOYMENTS)
    args = parser.parse_args(argv)
    from local.stack import DEMO_MODEL

    receiver = Receiver()
    latencies: list[float] = []
    try:
        with bench_run(args.env_file, {"worker_mode": "instant"}) as run:
            for _ in range(args.count):
                deployment_id = run.post({"hf_model_id": DEMO_MODEL, "user_webhook_url": receiver.url})
                arrived, body = receiver.wait(deployment_id, TIMEOUT_S)
                ready_at = datetime.fromisoformat(body["data"]["phase_timestamps"]["ready"].replace("Z", "+00:00"))
                latencies.append(arrived - ready_at.timestamp())
    finally:
        receiver.close()
    print(f"{len(latencies)} ready webhooks received (one deployment at a time)")
    print(f"{'#':>3} {'ready→webhook s':>16}")
    for n, value in enumerate(latencies, 1):
        print(f"{n:>3} {value:>16.3f}")
    print(f"\n{'measure':<22} {'p50 s':>7} {'p90 s':>7} {'p99 s':>7} {'max s':>7}")
    print(
        f"{'ready→webhook':<22} {statistics.median(latencies):>7.3f} {percentile(latencies, 0.9):>7.3f} "
        f"{percentile(latencies, 0.99):>7.3f} {max(latencies):>7.3f}"
    )


if __name__ == "__main__":
    main()

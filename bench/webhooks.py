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
import os
import statistics
import threading
import time
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from bench.orchestration import delete_all, percentile
from local.stack import read_env_file

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
    env = read_env_file(args.env_file)
    os.environ.update({k: v for k, v in env.items() if k.endswith("_EMULATOR_HOST") or k == "GOOGLE_CLOUD_PROJECT"})
    from google.cloud import firestore

    from local.stack import DEMO_MODEL

    db = firestore.Client(project=env["GOOGLE_CLOUD_PROJECT"])
    runpod = env["RUNPOD_API_BASE_URL"]
    before = requests.get(f"{runpod}/_sim/state", timeout=5).json()["scenario"]["worker_mode"]
    requests.post(f"{runpod}/_sim/scenario", json={"worker_mode": "instant"}, timeout=5).raise_for_status()
    api_key = f"rp_bench_{uuid.uuid4().hex}"
    requests.post(f"{runpod}/_sim/accounts", json={"api_key": api_key}, timeout=5).raise_for_status()
    intake = (env.get("INTAKE_URL") or env["PUBLIC_API_BASE_URL"]).rstrip("/")
    receiver = Receiver()
    created: list[str] = []
    latencies: list[float] = []
    try:
        for _ in range(args.count):
            answer = requests.post(
                f"{intake}/v1/deployments",
                json={"hf_model_id": DEMO_MODEL, "user_webhook_url": receiver.url},
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=10,
            )
            answer.raise_for_status()
            deployment_id = answer.json()["deployment_id"]
            created.append(deployment_id)
            arrived, body = receiver.wait(deployment_id, TIMEOUT_S)
            ready_at = datetime.fromisoformat(body["data"]["phase_timestamps"]["ready"].replace("Z", "+00:00"))
            latencies.append(arrived - ready_at.timestamp())
    finally:
        delete_all(intake, api_key, created, db)
        requests.post(f"{runpod}/_sim/scenario", json={"worker_mode": before}, timeout=5)
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

"""bench/webhooks: from a ``ready`` transition, and from a job's end, to its signed webhook arriving at a local
receiver (20 deployments, then 20 jobs).

Each deployment (instant worker) is POSTed with ``user_webhook_url`` pointing at a receiver on 127.0.0.1; latency =
the receiver's arrival time - the ``ready`` timestamp the deployment carries (``data.phase_timestamps.ready``, the
time of the transition, written by the callback function). The path measured: the transition's publish on
``deployment-events``, the Pub/Sub push to the webhooks function, the delivery record, the Cloud Task, the signed
POST. One deployment at a time.

Then jobs: each ``POST .../run`` with a ``webhook_url`` on one ready deployment; latency = arrival - the job's end in
the simulator (``finishedEpoch``). The path measured: Runpod's call on the job's end to the callback function, the
job-watch check (or the schedule's first check, whichever comes first), the job's record, the delivery, the Cloud
Task, the signed POST. Everything the run created is deleted at the end. Run with `make bench`.
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

import requests

from bench.stack import BenchRun, bench_run, percentile

DEPLOYMENTS = 20
JOBS = 20
TIMEOUT_S = 60.0
JOB_INPUT: dict[str, Any] = {"prompt": "a lighthouse", "num_inference_steps": 1, "width": 64, "height": 64}


class Receiver:
    """Collects webhook arrivals: deployment id → (arrival time, body) of its ``deployment.ready``, and job id →
    (arrival time, body) of its ``job.*``."""

    def __init__(self) -> None:
        self.ready: dict[str, tuple[float, dict[str, Any]]] = {}
        self.jobs: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.time()
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self.send_response(204)
                self.end_headers()
                kind = str(body.get("type", ""))
                with receiver._lock:
                    if kind == "deployment.ready":
                        receiver.ready[body["data"]["deployment_id"]] = (arrived, body)
                    elif kind.startswith("job."):
                        receiver.jobs[body["data"]["job_id"]] = (arrived, body)
                    receiver._lock.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def wait(self, arrivals: dict[str, tuple[float, dict[str, Any]]], key: str) -> tuple[float, dict[str, Any]]:
        """The arrival of ``key`` in ``arrivals`` (``self.ready`` or ``self.jobs``), once it came."""
        with self._lock:
            if not self._lock.wait_for(lambda: key in arrivals, timeout=TIMEOUT_S):
                raise TimeoutError(f"no webhook for {key} after {TIMEOUT_S:.0f} s")
            return arrivals[key]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def job_latencies(run: BenchRun, receiver: Receiver, deployment_id: str, count: int) -> list[float]:
    """Job end → job webhook arrived, for ``count`` jobs run one at a time on a ready deployment."""
    api_key = run.key_of(deployment_id)
    headers = {"Authorization": f"Bearer {api_key}"}
    latencies = []
    for _ in range(count):
        answer = requests.post(
            f"{run.intake}/v1/deployments/{deployment_id}/run",
            json={"input": JOB_INPUT, "webhook_url": receiver.url},
            headers=headers,
            timeout=30,
        )
        answer.raise_for_status()
        job_id = answer.json()["job_id"]
        arrived, _ = receiver.wait(receiver.jobs, job_id)
        state = requests.get(f"{run.runpod}/_sim/state", timeout=5).json()
        (job,) = [j for a in state["accounts"] if a["api_key"] == api_key for j in a["jobs"] if j["id"] == job_id]
        latencies.append(arrived - float(job["finishedEpoch"]))
    return latencies


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, default=Path(".local/stack.env"))
    parser.add_argument("--count", type=int, default=DEPLOYMENTS)
    parser.add_argument("--jobs", type=int, default=JOBS)
    args = parser.parse_args(argv)
    from local.stack import DEMO_MODEL

    receiver = Receiver()
    ready: list[float] = []
    try:
        with bench_run(args.env_file, {"worker_mode": "instant"}) as run:
            for _ in range(args.count):
                deployment_id = run.post({"hf_model_id": DEMO_MODEL, "user_webhook_url": receiver.url})
                arrived, body = receiver.wait(receiver.ready, deployment_id)
                ready_at = datetime.fromisoformat(body["data"]["phase_timestamps"]["ready"].replace("Z", "+00:00"))
                ready.append(arrived - ready_at.timestamp())
            jobs = job_latencies(run, receiver, deployment_id, args.jobs) if args.count else []
    finally:
        receiver.close()
    print(f"{len(ready)} ready webhooks (one deployment at a time), {len(jobs)} job webhooks (one job at a time)")
    print(f"\n{'measure':<22} {'n':>3} {'p50 s':>7} {'p90 s':>7} {'p99 s':>7} {'max s':>7}")
    for name, values in (("ready→webhook", ready), ("job end→webhook", jobs)):
        if values:
            print(
                f"{name:<22} {len(values):>3} {statistics.median(values):>7.3f} {percentile(values, 0.9):>7.3f} "
                f"{percentile(values, 0.99):>7.3f} {max(values):>7.3f}"
            )


if __name__ == "__main__":
    main()

"""bench/first_job: what a user feels: POST → first job completed, less the worker's own start time.

The simulator's instant workers are given a fixed start delay (``start_delay_s``: what a real container takes to
boot, which is not ours); each deployment is POSTed to the intake and the clock stops when its first job (the
provisioning's warm-up job) completes on the simulated Runpod. Felt overhead = that time - the start delay, split
into: POST → endpoint created (intake, Pub/Sub, provision, Hub and Runpod calls), endpoint created → worker started
less the delay (the warm-up job's submission: min 0 workers start with a job), and worker started → first job
completed (the worker's start-up round trips before it takes a job). Each deployment must also reach ``ready``
(the warm-up passed). Times are the simulator's wall clock as ``/_sim/state`` records it. Run with `make bench`
(or ``python -m bench.first_job`` against a stack that is ``make up``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import requests

from bench.stack import BenchRun, bench_run, percentile

DEPLOYMENTS = 20
START_DELAY_S = 1.0
TIMEOUT_S = 60.0
POLL_S = 0.05


def deploy(run: BenchRun, model: str) -> dict[str, float]:
    """POST one deployment, wait until it is ready and its warm-up job done; its times (seconds after the POST)."""
    posted = time.time()
    deployment_id = run.post({"hf_model_id": model})
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        doc = run.doc(deployment_id)
        if doc.get("status") == "failed":
            raise RuntimeError(f"{deployment_id} failed: {doc.get('error')}")
        endpoint_id = (doc.get("runpod") or {}).get("endpoint_id")
        if doc.get("status") == "ready" and endpoint_id:
            times = _sim_times(run.runpod, run.key_of(deployment_id), endpoint_id)
            if times is not None:
                return {key: value - posted for key, value in times.items()}
        time.sleep(POLL_S)
    raise TimeoutError(f"{deployment_id} not ready with its first job done after {TIMEOUT_S:.0f} s")


def _sim_times(runpod: str, api_key: str, endpoint_id: str) -> dict[str, float] | None:
    """Wall-clock times of the endpoint's creation, its first worker's start and its first completed job."""
    state = requests.get(f"{runpod}/_sim/state", timeout=5).json()
    account = next(a for a in state["accounts"] if a["api_key"] == api_key)
    endpoint = next(e for e in account["endpoints"] if e["id"] == endpoint_id)
    done = [
        j["finishedEpoch"] for j in account["jobs"] if j["endpointId"] == endpoint_id and j["status"] == "COMPLETED"
    ]
    started = [w["startedEpoch"] for w in account["workers"] if w["endpointId"] == endpoint_id and w["startedEpoch"]]
    if not done or not started:
        return None
    return {"endpoint_created": endpoint["createdEpoch"], "worker_started": min(started), "first_job_done": min(done)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, default=Path(".local/stack.env"))
    parser.add_argument("--count", type=int, default=DEPLOYMENTS)
    parser.add_argument("--start-delay", type=float, default=START_DELAY_S, help="the simulated worker start, s")
    args = parser.parse_args(argv)
    from local.stack import DEMO_MODEL

    rows = []
    with bench_run(args.env_file, {"worker_mode": "instant", "start_delay_s": args.start_delay}) as run:
        for _ in range(args.count):
            times = deploy(run, DEMO_MODEL)
            rows.append(
                {
                    "felt_s": times["first_job_done"] - args.start_delay,
                    "post→endpoint_s": times["endpoint_created"],
                    # the warm-up job's submission after the create, and the simulated placement
                    "endpoint→worker_start-delay_s": times["worker_started"]
                    - times["endpoint_created"]
                    - args.start_delay,
                    "worker_start→first_job_s": times["first_job_done"] - times["worker_started"],
                    "first_job_s": times["first_job_done"],
                }
            )
    print(f"{len(rows)} deployments, worker start {args.start_delay:.2f} s (simulated), one at a time")
    print(f"\n{'measure':<34} {'p50 s':>7} {'p90 s':>7} {'p99 s':>7} {'max s':>7}")
    for label in rows[0] if rows else ():
        values = [row[label] for row in rows]
        print(
            f"{label:<34} {statistics.median(values):>7.3f} {percentile(values, 0.9):>7.3f} "
            f"{percentile(values, 0.99):>7.3f} {max(values):>7.3f}"
        )


if __name__ == "__main__":
    main()

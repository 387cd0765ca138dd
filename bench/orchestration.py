"""bench/orchestration: 50 deployments through the local stack with the instant worker; our overhead per hop.

Each deployment is POSTed to the intake and followed in Firestore to ``ready``. Overhead = ready_at - accepted_at
- the worker's own reported time (download + load + warm-up), i.e. what Pub/Sub, the functions, Firestore, the Hub
checks and the Runpod calls add. Per-hop latencies come from the document's phase timestamps. The simulator is
switched to instant workers for the run and put back afterwards. Everything the run created is deleted at the end. Run
with `make bench`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.stack import BenchRun, bench_run, percentile

DEPLOYMENTS = 50
CONCURRENCY = 1  # one at a time: the per-deployment overhead; raise it to see contention on this machine
TIMEOUT_S = 60.0
HOPS = (
    ("accepted→selecting_gpu", "validating", "selecting_gpu"),
    ("selecting_gpu→creating_endpoint", "selecting_gpu", "creating_endpoint"),
    ("creating_endpoint→downloading", "creating_endpoint", "downloading_model"),
    ("downloading→loading", "downloading_model", "loading_model"),
    ("loading→ready", "loading_model", "ready"),
)


def deploy(run: BenchRun, model: str) -> dict[str, Any]:
    """POST one deployment and poll its document until it is ready or failed."""
    deployment_id = run.post({"hf_model_id": model})
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        doc = run.doc(deployment_id)
        if doc.get("status") in ("ready", "failed"):
            return doc
        time.sleep(0.02)
    raise TimeoutError(f"{deployment_id} not ready after {TIMEOUT_S:.0f} s")


def measure(doc: dict[str, Any]) -> dict[str, float]:
    stamps = doc.get("phase_timestamps") or {}
    timings = doc.get("timings") or {}
    worker_s = sum(float(timings.get(k) or 0) for k in ("download_s", "load_s", "warmup_s"))
    total = (stamps["ready"] - doc["created_at"]).total_seconds()
    row = {"total_s": total, "worker_s": worker_s, "overhead_s": total - worker_s}
    for label, start, end in HOPS:
        if start in stamps and end in stamps:
            row[label] = (stamps[end] - stamps[start]).total_seconds()
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, default=Path(".local/stack.env"))
    parser.add_argument("--count", type=int, default=DEPLOYMENTS)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    args = parser.parse_args(argv)
    from local.stack import DEMO_MODEL

    with bench_run(args.env_file, {"worker_mode": "instant"}) as run, ThreadPoolExecutor(args.concurrency) as pool:
        docs = list(pool.map(lambda _: deploy(run, DEMO_MODEL), range(args.count)))
    failed = [d for d in docs if d.get("status") != "ready"]
    rows = [measure(d) for d in docs if d.get("status") == "ready"]
    print(f"{len(rows)} ready, {len(failed)} failed ({args.concurrency} at a time)")
    print(f"{'#':>3} {'total s':>8} {'worker s':>8} {'overhead s':>10}")
    for n, row in enumerate(rows, 1):
        print(f"{n:>3} {row['total_s']:>8.3f} {row['worker_s']:>8.3f} {row['overhead_s']:>10.3f}")
    print(f"\n{'measure':<34} {'p50 s':>7} {'p90 s':>7} {'p99 s':>7} {'max s':>7}")
    for label in ("overhead_s", "total_s", *(hop[0] for hop in HOPS)):
        values = [row[label] for row in rows if label in row]
        if values:
            print(
                f"{label:<34} {statistics.median(values):>7.3f} {percentile(values, 0.9):>7.3f} "
                f"{percentile(values, 0.99):>7.3f} {max(values):>7.3f}"
            )
    for doc in failed:
        print(f"failed: {doc.get('deployment_id')}: {doc.get('error')}")


if __name__ == "__main__":
    main()

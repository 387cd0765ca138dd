"""bench/sweep: one sweep run over 500 and 2,000 deployments in the local stack's emulators.

Seeds deployments of a fresh tenant (half with an expired TTL, a quarter stuck in ``validating`` past the deadline, a
quarter healthy), then times one run of the sweep as Cloud Scheduler starts it: the indexed queries and decisions
(scan), the fan-out of one Cloud Task per due deployment to the stack's ``sweep`` function (fan-out), and how long
the stack then takes to handle every task (TTL → deleting → deleted, stuck → failed). The run itself stays bounded:
it only reads and enqueues; the work happens in the tasks.

Run: ``python -m bench.sweep [--sizes 500 2000]`` with the stack up (``make up``); ``make bench`` runs it.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from local.stack import read_env_file

HANDLE_CAP_S = 240.0


def seed(db: Any, owner: str, size: int) -> None:
    from shared.document import Deployment
    from shared.lifecycle import Status
    from shared.store import DEPLOYMENTS, utcnow

    now = utcnow()
    old = now - timedelta(hours=2)
    batch, pending = db.batch(), 0
    for n in range(size):
        kind = n % 4
        status = Status.VALIDATING if kind == 1 else Status.READY
        created = old if kind in (0, 1, 2) else now
        doc = Deployment(
            deployment_id=uuid.uuid4().hex,
            owner=owner,
            status=status,
            hf_model_id="bench/sweep",
            created_at=created,
            updated_at=created,
            phase_timestamps={status: created},
            ttl_minutes=10 if kind in (0, 2) else None,
            expires_at=created + timedelta(minutes=10) if kind in (0, 2) else None,
        )
        batch.set(db.collection(DEPLOYMENTS).document(doc.deployment_id), doc.to_firestore())
        pending += 1
        if pending == 400:
            batch.commit()
            batch, pending = db.batch(), 0
    if pending:
        batch.commit()


def one(size: int, db: Any, deps: Any) -> dict[str, float]:
    from shared.deployments import sweep as sweep_step
    from shared.store import utcnow

    owner = f"bench-sweep-{uuid.uuid4().hex[:8]}"
    seed(db, owner, size)
    due = size // 2 + size // 4
    fanout = sweep_step._task_fanout(deps)
    timings: dict[str, float] = {}

    def timed_fanout(items: list[Any]) -> None:
        timings["scan_s"] = time.monotonic() - started
        timings["fanned_out"] = len(items)
        begun = time.monotonic()
        fanout(items)
        timings["fanout_s"] = time.monotonic() - begun

    started = time.monotonic()
    sweep_step.run_sweep(deps, now=utcnow(), fanout=timed_fanout)
    timings["run_s"] = time.monotonic() - started
    deadline = time.monotonic() + HANDLE_CAP_S
    handled = 0
    while time.monotonic() < deadline:
        counts = deps.store.counts_by_status(owner)
        handled = counts["deleted"] + counts["failed"]
        if handled >= due:
            break
        time.sleep(0.5)
    timings["handled"] = handled
    timings["due"] = due
    timings["handled_s"] = time.monotonic() - started
    return timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, default=Path(".local/stack.env"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000])
    args = parser.parse_args(argv)
    env = read_env_file(args.env_file)
    os.environ.update(env)
    from shared.config import BackgroundSettings, get_settings
    from shared.wiring import firestore_client, step_deps

    get_settings.cache_clear()
    settings = get_settings(BackgroundSettings)
    deps = step_deps(settings)
    db = firestore_client(settings)
    print("| deployments | due | run (scan + fan-out) s | scan s | fan-out s | all handled after s |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        t = one(size, db, deps)
        handled = f"{t['handled_s']:.1f}" if t["handled"] >= t["due"] else f">{HANDLE_CAP_S:.0f} ({t['handled']:.0f})"
        print(
            f"| {size} | {t['due']:.0f} (fanned out {t['fanned_out']:.0f}) | {t['run_s']:.2f} | {t['scan_s']:.2f} "
            f"| {t['fanout_s']:.2f} | {handled} |"
        )


if __name__ == "__main__":
    main()

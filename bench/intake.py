"""bench/intake: 32 concurrent clients POSTing deployments for 20 s against the local stack, and the ceiling.

The ceiling is the same work one POST does (rate-limit counter, the one batched create commit, the publish),
issued directly from this process with no HTTP in front, as fast as it goes. Run with `make bench`.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import requests

from local.stack import read_env_file

CLIENTS = 32
DURATION_S = 20.0
WARMUP_S = 5.0
# The per-tenant limit (120/min) would throttle one tenant at this rate: each client rotates tenant keys.
REQUESTS_PER_TENANT = 100
# A model the Hub does not have: provisioning reacts to every POST (as it would) but fails fast without Runpod,
# so the benchmark measures intake rather than thousands of simulated workers.
BODY = b'{"hf_model_id": "visgate-bench/not-on-the-hub"}'


def run_clients(one_request: Callable[[int, int], bool], clients: int, duration_s: float) -> tuple[list[float], int]:
    """Call ``one_request(client, n)`` in a closed loop from each client; return latencies (s) and error count."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.monotonic() + duration_s

    def loop(client: int) -> None:
        nonlocal errors
        n = 0
        local: list[float] = []
        local_errors = 0
        while time.monotonic() < deadline:
            start = time.perf_counter()
            ok = one_request(client, n)
            local.append(time.perf_counter() - start)
            local_errors += 0 if ok else 1
            n += 1
        with lock:
            latencies.extend(local)
            errors += local_errors

    threads = [threading.Thread(target=loop, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors


def summary(name: str, latencies: list[float], errors: int, duration_s: float) -> dict[str, float | str]:
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else float("nan")

    return {
        "path": name,
        "requests": len(ordered),
        "errors": errors,
        "rps": len(ordered) / duration_s,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "mean_ms": statistics.fmean(ordered) * 1000 if ordered else float("nan"),
    }


def http_path(intake_url: str, clients: int, duration_s: float) -> dict[str, float | str]:
    sessions = [requests.Session() for _ in range(clients)]
    run_id = uuid.uuid4().hex[:8]

    def post(client: int, n: int) -> bool:
        key = f"rp_bench_{run_id}_{client}_{n // REQUESTS_PER_TENANT}"
        resp = sessions[client].post(
            f"{intake_url}/v1/deployments",
            data=BODY,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            timeout=30,
        )
        return resp.status_code == 202

    latencies, errors = run_clients(post, clients, duration_s)
    return summary("HTTP POST /v1/deployments", latencies, errors, duration_s)


def ceiling_path(clients: int, duration_s: float) -> dict[str, float | str]:
    """The same Firestore commit (rate counter included) and publish, straight from the intake step (no HTTP)."""
    from shared.config import get_settings
    from shared.intake.auth import Caller
    from shared.intake.ratelimit import current_window
    from shared.intake.steps import IntakeDeps, create_deployment, parse_create_request
    from shared.wiring import core

    settings = get_settings()
    _db, store, publisher, lifecycle, sealer = core(settings)
    deps = IntakeDeps(settings, store, lifecycle, publisher, sealer)
    body = parse_create_request(BODY, settings)
    run_id = uuid.uuid4().hex[:8]

    def direct(client: int, n: int) -> bool:
        caller = Caller(tenant=f"t_bench_{run_id}_{client}_{n // REQUESTS_PER_TENANT}", api_key="rp_bench_ceiling")
        rate = current_window(caller.tenant, settings.rate_limit_per_minute)
        create_deployment(deps, caller, body, BODY, idempotency_key=None, rate=rate)
        return True

    latencies, errors = run_clients(direct, clients, duration_s)
    return summary("ceiling: same writes + publish, no HTTP", latencies, errors, duration_s)


def print_table(rows: list[dict[str, float | str]]) -> None:
    columns = ["path", "requests", "errors", "rps", "p50_ms", "p95_ms", "p99_ms", "mean_ms"]
    widths = {c: max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in columns}
    print(" | ".join(c.ljust(widths[c]) for c in columns))
    print("-+-".join("-" * widths[c] for c in columns))
    for row in rows:
        print(" | ".join(_fmt(row[c]).ljust(widths[c]) for c in columns))


def _fmt(value: float | str) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--seconds", type=float, default=DURATION_S)
    parser.add_argument("--env-file", type=Path, default=Path(".local/stack.env"))
    args = parser.parse_args(argv)

    env = read_env_file(args.env_file)
    os.environ.update({k: v for k, v in env.items() if k not in os.environ})
    os.environ.setdefault("SEALING_KEY", base64.b64encode(os.urandom(32)).decode())
    intake_url = env["INTAKE_URL"] if "INTAKE_URL" in env else env["PUBLIC_API_BASE_URL"]

    # Unmeasured warm-up: the emulators' JVMs and the functions' clients get hot before either path is timed.
    http_path(intake_url, args.clients, WARMUP_S)
    http = http_path(intake_url, args.clients, args.seconds)
    ceiling = ceiling_path(args.clients, args.seconds)
    print(f"\nbench/intake: {args.clients} clients, {args.seconds:.0f} s each path")
    print_table([http, ceiling])
    ratio = float(http["rps"]) / float(ceiling["rps"]) if float(ceiling["rps"]) else float("nan")
    print(f"\nHTTP / ceiling throughput ratio: {ratio:.2f}  (targets: >=150 rps with p99 <=150 ms, or >=0.7x ceiling)")


if __name__ == "__main__":
    main()

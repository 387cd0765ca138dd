"""bench/intake: 32 concurrent clients POSTing deployments for 20 s against the local stack, and the ceiling.

The ceiling is the same work one POST does (rate-limit counter, the one batched create commit, the publish),
issued directly from this process with no HTTP in front, as fast as it goes. Run with `make bench`.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import os
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import requests

from local.stack import read_env_file

CLIENTS = 32
DURATION_S = 20.0
WARMUP_S = 5.0
ROUNDS = 4
CEILING = "ceiling: same writes + publish, no HTTP"
# The per-tenant limit (120/min) would throttle one tenant at this rate: each client rotates tenant keys.
# Under MAX_LIVE_DEPLOYMENTS_PER_TENANT (20): each create stays live, so a tenant takes at most that many.
REQUESTS_PER_TENANT = 20
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
            try:
                ok = one_request(client, n)
            except Exception:  # a failed request is an error in the table, not a dead client
                ok = False
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


class KeepAliveClient:
    """A minimal HTTP/1.1 keep-alive client.

    The load generator shares the machine's two cores with the server and the emulators, so it must cost as little
    CPU as it can: this is about a fifth of what ``requests`` spends per call.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._host = parts.netloc
        self._sock: socket.socket | None = None
        self._buffer = b""

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        lines = [f"POST {path} HTTP/1.1", f"Host: {self._host}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        if self._sock is not None:
            try:
                self._sock.sendall(request)
                head = self._read_until(b"\r\n\r\n")
            except OSError:  # the server closed an idle keep-alive connection: open a new one
                self._sock.close()
                self._sock = None
        if self._sock is None:
            self._sock = socket.create_connection(self._address, timeout=30)
            self._buffer = b""
            self._sock.sendall(request)
            head = self._read_until(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        self._read_exactly(int(fields.get("content-length", "0")))
        if fields.get("connection", "").lower() == "close":
            self._sock.close()
            self._sock = None
        return int(status_line.split()[1])

    def _fill(self) -> None:
        assert self._sock is not None
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self._buffer += chunk

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            self._fill()
        head, _, self._buffer = self._buffer.partition(marker)
        return head

    def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


Path_ = Callable[[int, int], bool]


def http_request(intake_url: str, runpod_url: str, clients: int) -> Path_:
    connections = [KeepAliveClient(intake_url) for _ in range(clients)]
    path = f"{urlsplit(intake_url).path}/v1/deployments"
    run_id = uuid.uuid4().hex[:8]
    sent = [itertools.count() for _ in range(clients)]  # across rounds, so tenants rotate as they should
    registered: set[str] = set()

    def post(client: int, _n: int) -> bool:
        key = f"rp_bench_{run_id}_{client}_{next(sent[client]) // REQUESTS_PER_TENANT}"
        if key not in registered:  # a Runpod account per tenant: the API verifies each new key with Runpod
            requests.post(f"{runpod_url}/_sim/accounts", json={"api_key": key}, timeout=10).raise_for_status()
            registered.add(key)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        return connections[client].post(path, BODY, headers) == 202

    return post


def direct_request(clients: int) -> Path_:
    """The same Firestore commit (rate counter included) and publish, straight from the intake step (no HTTP)."""
    from shared.config import IntakeSettings, get_settings
    from shared.intake.auth import Caller
    from shared.intake.ratelimit import current_window
    from shared.intake.steps import create_deployment, parse_create_request
    from shared.wiring.intake import intake_clients, intake_deps

    settings = get_settings(IntakeSettings)
    # The ceiling calls the create step directly: the key check of the HTTP path is not part of it.
    deps = intake_deps(settings, intake_clients(settings))
    body = parse_create_request(BODY, settings)
    run_id = uuid.uuid4().hex[:8]
    sent = [itertools.count() for _ in range(clients)]

    def direct(client: int, _n: int) -> bool:
        tenant = f"t_bench_{run_id}_{client}_{next(sent[client]) // REQUESTS_PER_TENANT}"
        caller = Caller(tenant=tenant, api_key="rp_bench_ceiling")
        rate = current_window(caller.tenant, settings.rate_limit_per_minute)
        create_deployment(deps, caller, body, BODY, idempotency_key=None, rate=rate)
        return True

    return direct


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

    paths = {
        "HTTP POST /v1/deployments": http_request(intake_url, env["RUNPOD_API_BASE_URL"], args.clients),
        CEILING: direct_request(args.clients),
    }
    # Unmeasured warm-up: the emulators' JVMs and the functions' clients get hot before either path is timed.
    run_clients(paths["HTTP POST /v1/deployments"], args.clients, WARMUP_S)
    # Alternate short rounds, so that drift on a shared machine (and provisioning catching up) hits both paths alike.
    results: dict[str, tuple[list[float], int]] = {name: ([], 0) for name in paths}
    for _ in range(ROUNDS):
        for name, one_request in paths.items():
            latencies, errors = run_clients(one_request, args.clients, args.seconds / ROUNDS)
            results[name] = (results[name][0] + latencies, results[name][1] + errors)
    http, ceiling = (summary(name, *results[name], args.seconds) for name in paths)
    print(f"\nbench/intake: {args.clients} clients, {args.seconds:.0f} s each path in {ROUNDS} alternating rounds")
    print_table([http, ceiling])
    ratio = float(http["rps"]) / float(ceiling["rps"]) if float(ceiling["rps"]) else float("nan")
    print(f"\nHTTP / ceiling throughput ratio: {ratio:.2f}  (targets: >=150 rps with p99 <=150 ms, or >=0.7x ceiling)")


if __name__ == "__main__":
    main()

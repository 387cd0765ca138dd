"""bench/inference: the proxy's overhead. ``runsync`` through our API vs the same runsync sent straight to the
Runpod simulator, on the same endpoint and instant worker, interleaved request by request in one run.

It starts what it needs and nothing more (the Firestore emulator, the Runpod simulator with instant workers, the
intake function under functions-framework in its own process), writes one ready deployment, and calls from one
keep-alive client: sequential latency, so the figure is what one app call costs on top of Runpod, not throughput.
Three paths: straight to the simulator, through the API with the Runpod key, and with an invoke key (which also
opens the sealed Runpod key). Target: p50 overhead <= 25 ms on this machine. ``python -m bench.inference``.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from local.emulators import start_firestore, start_runpod
from local.processes import REPO_ROOT, Service, free_port, http_ok, spawn, stop, wait_healthy

PROJECT = "visgate-bench"
BODY: dict[str, Any] = {
    "input": {"prompt": "a red fox in the snow", "num_inference_steps": 2, "width": 64, "height": 64}
}
TARGET_P50_OVERHEAD_MS = 25.0


def _pct(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def _row(name: str, samples: list[float], baseline_p50: float | None) -> dict[str, str]:
    ordered = sorted(samples)
    p50, p99 = _pct(ordered, 0.50), _pct(ordered, 0.99)
    return {
        "path": name,
        "n": str(len(ordered)),
        "p50_ms": f"{p50:.1f}",
        "p99_ms": f"{p99:.1f}",
        "mean_ms": f"{statistics.fmean(ordered):.1f}",
        "p50_overhead_ms": "-" if baseline_p50 is None else f"{p50 - baseline_p50:.1f}",
        "p50_ratio": "-" if baseline_p50 is None else f"{p50 / baseline_p50:.2f}",
    }


def _print(rows: list[dict[str, str]]) -> None:
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    print(" | ".join(c.ljust(widths[c]) for c in columns))
    print("-+-".join("-" * widths[c] for c in columns))
    for row in rows:
        print(" | ".join(row[c].ljust(widths[c]) for c in columns))


def _ready_deployment(env: dict[str, str], runpod_url: str, api_key: str) -> tuple[str, str]:
    """An instant-worker endpoint and a ready deployment document on it, with the key sealed as the API seals it."""
    os.environ.update(env)
    from google.cloud import firestore

    from shared.creation import NewDeployment
    from shared.crypto import Sealer, tenant_id
    from shared.document import Deployment
    from shared.lifecycle import Status
    from shared.models import SealedCredentials
    from shared.runpod.client import EndpointSpec, GpuSelection, QueueDelayScaling, RunpodConnector, WorkerLimits
    from shared.store import DeploymentStore, utcnow

    spec = EndpointSpec(
        name=f"visgate-bench-{uuid.uuid4().hex[:8]}",
        image="ghcr.io/visgate/diffusers-worker@sha256:" + "0" * 64,
        env={},
        disk=5,
        gpu=GpuSelection(pools=["AMPERE_16"]),
        workers=WorkerLimits(min=1, max=1, idleTimeout=60),
        scaling=QueueDelayScaling(queueDelay=4),
        flashboot="OFF",
        timeout=600_000,
    )
    endpoint_id = RunpodConnector(runpod_url, runpod_url, 10).client(api_key).create_endpoint(spec).id
    deployment_id = uuid.uuid4().hex
    now = utcnow()
    doc = Deployment(
        deployment_id=deployment_id,
        owner=tenant_id(env["TENANT_PEPPER"], api_key),
        status=Status.READY,
        hf_model_id="org/model",
        created_at=now,
        updated_at=now,
        phase_timestamps={Status.READY: now},
    )
    doc.runpod.endpoint_id = endpoint_id
    doc.gpu.pool_in_use = "AMPERE_16"
    sealer = Sealer(env["SEALING_KEY"])
    DeploymentStore(firestore.Client(project=PROJECT)).create(
        NewDeployment(
            document=doc,
            sealed_credentials=sealer.seal(deployment_id, SealedCredentials(runpod_api_key=api_key)),
            callback_nonce="bench",
            callback_secret_hash="bench",
        )
    )
    return endpoint_id, deployment_id


def _start_intake(log_dir: Path, env: dict[str, str]) -> Service:
    port = free_port()
    argv = [
        str(Path(sys.executable).parent / "functions-framework"),
        "--target=intake",
        f"--source={REPO_ROOT / 'functions/intake/main.py'}",
        f"--port={port}",
        "--host=127.0.0.1",
    ]
    service, process = spawn("intake", argv, port=port, log_dir=log_dir, env=env)
    return wait_healthy(service, lambda: http_ok(f"http://127.0.0.1:{port}/health", timeout=5), process=process)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=300, help="requests per path (interleaved)")
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args(argv)

    log_dir = Path(tempfile.mkdtemp(prefix="bench-inference-"))
    api_key = f"rp_bench_{uuid.uuid4().hex}"
    services: list[Service] = []
    try:
        firestore_svc = start_firestore(log_dir, PROJECT)
        services.append(firestore_svc)
        runpod_svc = start_runpod(log_dir, api_key, worker_command=None)
        services.append(runpod_svc)
        runpod_url = runpod_svc.url
        env = {
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "FIRESTORE_EMULATOR_HOST": firestore_svc.address,
            "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",  # never published to here: the deployment is written directly
            "RUNPOD_API_BASE_URL": runpod_url,
            "RUNPOD_ENDPOINT_BASE_URL": runpod_url,
            "TENANT_PEPPER": base64.b64encode(os.urandom(16)).decode(),
            "SEALING_KEY": base64.b64encode(os.urandom(32)).decode(),
            "RATE_LIMIT_PER_MINUTE": "1000000",
            "LOG_LEVEL": "WARNING",
        }
        endpoint_id, deployment_id = _ready_deployment(env, runpod_url, api_key)
        intake = _start_intake(log_dir, env)
        services.append(intake)

        session = requests.Session()
        bearer = {"Authorization": f"Bearer {api_key}"}
        created = session.post(f"{intake.url}/v1/deployments/{deployment_id}/keys", headers=bearer, timeout=30)
        created.raise_for_status()
        invoke = {"Authorization": f"Bearer {created.json()['key']}"}

        def direct() -> Any:
            return session.post(f"{runpod_url}/v2/{endpoint_id}/runsync", json=BODY, headers=bearer, timeout=60)

        def via(headers: dict[str, str]) -> Callable[[], Any]:
            url = f"{intake.url}/v1/deployments/{deployment_id}/runsync"
            return lambda: session.post(url, json=BODY, headers=headers, timeout=60)

        paths = {
            "direct: simulator runsync": direct,
            "API runsync (Runpod key)": via(bearer),
            "API runsync (invoke key)": via(invoke),
        }
        samples: dict[str, list[float]] = {name: [] for name in paths}
        for n in range(args.warmup + args.rounds):
            for name, call in paths.items():
                start = time.perf_counter()
                response = call()
                elapsed = (time.perf_counter() - start) * 1000
                if response.status_code != 200 or response.json().get("status") != "COMPLETED":
                    raise RuntimeError(f"{name}: {response.status_code} {response.text[:300]}")
                if n >= args.warmup:
                    samples[name].append(elapsed)

        baseline = sorted(samples["direct: simulator runsync"])
        base_p50 = _pct(baseline, 0.5)
        rows = [_row(name, values, None if name.startswith("direct") else base_p50) for name, values in samples.items()]
        print(f"{args.rounds} interleaved rounds, one keep-alive client, instant worker, after {args.warmup} warm-up")
        _print(rows)
        overhead = float(rows[1]["p50_overhead_ms"])
        verdict = "met" if overhead <= TARGET_P50_OVERHEAD_MS else "NOT met"
        print(f"target p50 overhead <= {TARGET_P50_OVERHEAD_MS:.0f} ms (Runpod key): {verdict}")
    finally:
        for service in reversed(services):
            stop(service)
    return 0


if __name__ == "__main__":
    sys.exit(main())

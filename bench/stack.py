"""What the stack benchmarks share: a run against `make up`'s stack with a fresh Runpod account and a scenario that
is put back afterwards, deployments POSTed through the intake, and the teardown of everything the run created."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from local.stack import read_env_file

TEARDOWN_TIMEOUT_S = 60.0
# A tenant may hold MAX_LIVE_DEPLOYMENTS_PER_TENANT (20 by default) live deployments: a run that keeps more than
# that many until its teardown spreads them over fresh accounts.
DEPLOYMENTS_PER_ACCOUNT = 20


def new_account(runpod: str) -> str:
    api_key = f"rp_bench_{uuid.uuid4().hex}"
    requests.post(f"{runpod}/_sim/accounts", json={"api_key": api_key}, timeout=5).raise_for_status()
    return api_key


@dataclass
class BenchRun:
    intake: str
    runpod: str
    api_key: str  # the account of the run's current deployments (a fresh one every DEPLOYMENTS_PER_ACCOUNT)
    db: Any  # google.cloud.firestore.Client, imported only once the emulator's address is in the environment
    created: list[str] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)  # deployment id -> the key it was created with

    def post(self, body: dict[str, Any]) -> str:
        """POST one deployment (its id is kept for the teardown) and return its id."""
        if sum(key == self.api_key for key in self.keys.values()) >= DEPLOYMENTS_PER_ACCOUNT:
            self.api_key = new_account(self.runpod)
        answer = requests.post(
            f"{self.intake}/v1/deployments",
            json=body,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=10,
        )
        answer.raise_for_status()
        deployment_id: str = answer.json()["deployment_id"]
        self.created.append(deployment_id)
        self.keys[deployment_id] = self.api_key
        return deployment_id

    def key_of(self, deployment_id: str) -> str:
        """The Runpod key a deployment of this run was created with."""
        return self.keys.get(deployment_id, self.api_key)

    def doc(self, deployment_id: str) -> dict[str, Any]:
        return self.db.collection("deployments").document(deployment_id).get().to_dict() or {}


@contextmanager
def bench_run(env_file: Path, scenario: dict[str, Any]) -> Iterator[BenchRun]:
    """A run on the stack that ``env_file`` describes, with the simulator's ``scenario`` for its duration.

    A fresh account per run: the intake's per-tenant rate limit (120/min) would throttle repeated runs of one key.
    """
    env = read_env_file(env_file)
    os.environ.update({k: v for k, v in env.items() if k.endswith("_EMULATOR_HOST") or k == "GOOGLE_CLOUD_PROJECT"})
    from google.cloud import firestore

    runpod = env["RUNPOD_API_BASE_URL"]
    before = requests.get(f"{runpod}/_sim/state", timeout=5).json()["scenario"]
    requests.post(f"{runpod}/_sim/scenario", json=scenario, timeout=5).raise_for_status()
    api_key = new_account(runpod)
    run = BenchRun(
        intake=(env.get("INTAKE_URL") or env["PUBLIC_API_BASE_URL"]).rstrip("/"),
        runpod=runpod,
        api_key=api_key,
        db=firestore.Client(project=env["GOOGLE_CLOUD_PROJECT"]),
    )
    try:
        yield run
    finally:
        delete_all(run)
        requests.post(f"{runpod}/_sim/scenario", json={key: before[key] for key in scenario}, timeout=5)


def delete_all(run: BenchRun) -> None:
    """DELETE what the run created and wait until cleanup tore it down, so no endpoint outlives the benchmark
    (their workers would also take CPU from the benchmarks that follow)."""
    for deployment_id in run.created:
        requests.delete(
            f"{run.intake}/v1/deployments/{deployment_id}",
            headers={"Authorization": f"Bearer {run.key_of(deployment_id)}"},
            timeout=10,
        ).raise_for_status()
    deadline = time.monotonic() + TEARDOWN_TIMEOUT_S
    pending = set(run.created)
    while pending and time.monotonic() < deadline:
        pending = {i for i in pending if run.doc(i).get("status") != "deleted"}
        time.sleep(0.2)
    if pending:
        raise TimeoutError(f"{len(pending)} deployments not deleted after {TEARDOWN_TIMEOUT_S:.0f} s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

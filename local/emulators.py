"""Start the local stand-ins for Google Cloud, S3, the Hub and Runpod, and the functions host and scheduler loop.

One function per stand-in: the program it runs, its ports and files, and the check that says it is healthy. The
process handling they share (detached start, health wait, stop by process group, free ports) is local/processes.py.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from local.processes import LOOPBACK, REPO_ROOT, Service, free_port, http_ok, spawn, tcp_listening, wait_healthy

TASKS_EMULATOR = REPO_ROOT / ".venv-tasks" / "bin" / "gcloud-tasks-emulator"
MOTO_SERVER = Path(sys.executable).parent / "moto_server"
FIREBASE_CLI = REPO_ROOT / "local" / "firebase" / "node_modules" / ".bin" / "firebase"


def start_firestore(log_dir: Path, project: str, rules: Path | None = None, port: int | None = None) -> Service:
    """The Firestore emulator (java, via gcloud); with ``rules`` it enforces them for client requests."""
    port = port or free_port()
    argv = ["gcloud", "emulators", "firestore", "start", f"--host-port={LOOPBACK}:{port}", f"--project={project}"]
    if rules is not None and rules.is_file():
        argv.append(f"--rules={rules}")
    service, process = spawn("firestore", argv, port=port, log_dir=log_dir)
    return wait_healthy(service, lambda: http_ok(f"http://{LOOPBACK}:{port}/"), process=process)


def start_pubsub(log_dir: Path, project: str, port: int | None = None) -> Service:
    """The Pub/Sub emulator (java, via gcloud), with its own data dir so that several can run at once."""
    port = port or free_port()
    data_dir = log_dir / f"pubsub-data-{port}"
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        "gcloud",
        "beta",
        "emulators",
        "pubsub",
        "start",
        f"--host-port={LOOPBACK}:{port}",
        f"--data-dir={data_dir}",
        f"--project={project}",
    ]
    service, process = spawn("pubsub", argv, port=port, log_dir=log_dir)
    return wait_healthy(service, lambda: http_ok(f"http://{LOOPBACK}:{port}/"), process=process)


def start_tasks(log_dir: Path, port: int | None = None, max_retries: int = -1) -> Service:
    """The Cloud Tasks emulator (gRPC, from its own venv); queues are created by the bootstrap.

    It retries a failed task at once and forever by default (no backoff); ``max_retries`` caps that.
    """
    port = port or free_port()
    argv = [str(TASKS_EMULATOR), "start", f"--port={port}", f"--max-retries={max_retries}"]
    # Quiet the emulator's own python warnings (python version notices) that would flood its log.
    service, process = spawn("tasks", argv, port=port, log_dir=log_dir, env={"PYTHONWARNINGS": "ignore"})
    return wait_healthy(service, lambda: tcp_listening(port), process=process, timeout_s=30)


def start_s3(log_dir: Path, port: int | None = None) -> Service:
    """The moto server: a real S3 HTTP API (it checks no credentials)."""
    port = port or free_port()
    argv = [str(MOTO_SERVER), "-H", LOOPBACK, "-p", str(port)]
    service, process = spawn("s3", argv, port=port, log_dir=log_dir)
    return wait_healthy(service, lambda: http_ok(f"http://{LOOPBACK}:{port}/moto-api/"), process=process, timeout_s=30)


def firebase_auth_available() -> bool:
    """True once ``make install`` put firebase-tools (pinned in local/firebase/package.json) into the repo."""
    return FIREBASE_CLI.is_file()


def start_firebase_auth(log_dir: Path, project: str, port: int | None = None) -> Service:
    """The Firebase Authentication emulator (firebase-tools, node): client apps sign in with our custom tokens.

    Its hub and logging ports are picked free too (their defaults, 4400 and 4500, would collide between stacks),
    and the CLI's config folder is private to the stack with its daily network check (MOTD) marked done: offline,
    that check only costs a timeout.
    """
    port = port or free_port()
    work = log_dir / f"firebase-auth-{port}"
    (work / "config" / "configstore").mkdir(parents=True, exist_ok=True)
    motd = {"motd": {"fetched": int(time.time() * 1000)}, "usage": False}
    (work / "config" / "configstore" / "firebase-tools.json").write_text(json.dumps(motd))
    config = {
        "emulators": {
            "auth": {"host": LOOPBACK, "port": port},
            "hub": {"host": LOOPBACK, "port": free_port()},
            "logging": {"host": LOOPBACK, "port": free_port()},
            "ui": {"enabled": False},
        }
    }
    (work / "firebase.json").write_text(json.dumps(config))
    argv = [
        str(FIREBASE_CLI),
        "emulators:start",
        "--only",
        "auth",
        f"--project={project}",
        f"--config={work / 'firebase.json'}",
    ]
    env = {"XDG_CONFIG_HOME": str(work / "config"), "NO_UPDATE_NOTIFIER": "1", "CI": "true"}
    service, process = spawn("firebase-auth", argv, port=port, log_dir=log_dir, env=env)
    return wait_healthy(service, lambda: http_ok(f"http://{LOOPBACK}:{port}/"), process=process, timeout_s=90)


def hub_simulator_available() -> bool:
    """True once the Hub simulator package exists in this checkout."""
    return (REPO_ROOT / "simulators" / "hub" / "__main__.py").is_file()


def runpod_simulator_available() -> bool:
    """True once the Runpod simulator package exists in this checkout."""
    return (REPO_ROOT / "simulators" / "runpod" / "__main__.py").is_file()


def start_hub(log_dir: Path, models_root: Path, port: int | None = None) -> Service:
    """The Hugging Face Hub simulator serving the repos under ``models_root`` (point ``HF_ENDPOINT`` at it)."""
    port = port or free_port()
    argv = [
        sys.executable,
        "-m",
        "simulators.hub",
        "--models-root",
        str(models_root),
        "--host",
        LOOPBACK,
        "--port",
        str(port),
    ]
    service, process = spawn("hub", argv, port=port, log_dir=log_dir)
    return wait_healthy(service, lambda: tcp_listening(port), process=process, timeout_s=30)


def start_runpod(
    log_dir: Path,
    api_key: str,
    worker_command: str | None,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
) -> Service:
    """The Runpod simulator; with ``worker_command`` its workers are real processes, otherwise instant fakes."""
    port = port or free_port()
    argv = [sys.executable, "-m", "simulators.runpod", "--host", LOOPBACK, "--port", str(port), "--api-key", api_key]
    if worker_command:
        argv += ["--worker-mode", "process", "--worker-command", worker_command]
    else:
        argv += ["--worker-mode", "instant"]
    service, process = spawn("runpod", argv, port=port, log_dir=log_dir, env=env)
    return wait_healthy(service, lambda: tcp_listening(port), process=process, timeout_s=30)


def start_functions_host(
    log_dir: Path,
    env: Mapping[str, str],
    *,
    topology: str = "shared.topology",
    source_root: Path = REPO_ROOT / "functions",
    port: int | None = None,
    processes: int = 2,
) -> Service:
    """The local functions host (local/functions_host.py) serving ``topology``'s functions with ``env`` set.

    Pushes are turned into CloudEvents naming the project of ``env["GOOGLE_CLOUD_PROJECT"]``.
    """
    port = port or free_port()
    argv = [
        sys.executable,
        "-m",
        "local.functions_host",
        f"--port={port}",
        f"--topology={topology}",
        f"--source-root={source_root}",
        f"--project={env['GOOGLE_CLOUD_PROJECT']}",
        f"--processes={processes}",
    ]
    service, process = spawn("functions", argv, port=port, log_dir=log_dir, env=env)
    wait_healthy(service, lambda: http_ok(f"{service.url}/_host/health"), process=process)
    if (source_root / "intake" / "main.py").is_file():
        # Healthy means the intake answers its own health check (it reads Firestore), not just that a port is open.
        wait_healthy(service, lambda: http_ok(f"{service.url}/intake/health", timeout=5), process=process)
    return service


def start_scheduler(log_dir: Path, env: Mapping[str, str], base_url: str, topology: str = "shared.topology") -> Service:
    """The local Cloud Scheduler loop (local/scheduler.py) calling the functions host at ``base_url``."""
    argv = [sys.executable, "-m", "local.scheduler", f"--base-url={base_url}", f"--topology={topology}"]
    # The loop listens on nothing; its port is only a placeholder in the pid file.
    service, _ = spawn("scheduler", argv, port=free_port(), log_dir=log_dir, env=env)
    return service

"""Start, check and stop the local stand-ins for Google Cloud, S3, the Hub and Runpod as child processes.

Every stand-in runs in its own process group (``start_new_session``) so that stopping it also stops the children
it spawns (``gcloud`` starts a java process). Ports are picked free and checked again right before the start,
because the Pub/Sub emulator started on a taken port keeps running but never listens.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
TASKS_EMULATOR = REPO_ROOT / ".venv-tasks" / "bin" / "gcloud-tasks-emulator"
MOTO_SERVER = Path(sys.executable).parent / "moto_server"
FIREBASE_CLI = REPO_ROOT / "local" / "firebase" / "node_modules" / ".bin" / "firebase"


# Our running children. Holding them keeps Popen from warning "still running" when an object is collected (they are
# detached on purpose), and lets stop() reap them through Popen, which then knows they exited.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class StartError(RuntimeError):
    """A stand-in did not become healthy in time (its log file says why)."""


@dataclass(frozen=True)
class Service:
    """A running stand-in: what was started, where it listens, and its log."""

    name: str
    pid: int
    port: int
    log: str
    host: str = LOOPBACK

    @property
    def address(self) -> str:
        """``host:port``, the form the ``*_EMULATOR_HOST`` variables take."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Base HTTP URL of the stand-in."""
        return f"http://{self.address}"

    def to_json(self) -> dict[str, object]:
        """A JSON-ready form, for the stack's pid file."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Service:
        """Inverse of :meth:`to_json`."""
        return cls(
            name=str(data["name"]),
            pid=int(str(data["pid"])),
            port=int(str(data["port"])),
            log=str(data["log"]),
            host=str(data.get("host", LOOPBACK)),
        )


def port_is_free(port: int) -> bool:
    """True when nothing listens on ``port`` on any IPv4 or IPv6 address (the tasks emulator binds ``[::]``)."""
    for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):  # a probe bind
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((address, port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A port that is free right now on all addresses."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((LOOPBACK, 0))
            port = int(probe.getsockname()[1])
        if port_is_free(port):
            return port
    raise StartError("no free port found")


def tcp_listening(port: int, host: str = LOOPBACK) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when ``GET url`` answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # local http URLs only
            return 200 <= int(response.status) < 300
    except (OSError, urllib.error.URLError):
        return False


def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    port: int,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
) -> tuple[Service, subprocess.Popen[bytes]]:
    """Start ``argv`` detached in its own process group, output appended to ``log_dir/<name>.log``."""
    if not port_is_free(port):
        raise StartError(f"{name}: port {port} is already taken")
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1", "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # argv is built here from fixed programs
            list(argv),
            cwd=REPO_ROOT,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[process.pid] = process
    logger.info("started %s (pid %s) on port %s, log %s", name, process.pid, port, log_path)
    return Service(name=name, pid=process.pid, port=port, log=str(log_path)), process


def wait_healthy(
    service: Service,
    check: Callable[[], bool],
    *,
    timeout_s: float = 60.0,
    process: subprocess.Popen[bytes] | None = None,
) -> Service:
    """Poll ``check`` until it passes; fail early if the process died, and stop it on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            logger.info("%s is healthy at %s", service.name, service.address)
            return service
        exited = process.poll() is not None if process is not None else not process_alive(service.pid)
        if exited:
            raise StartError(f"{service.name} exited during start-up; see {service.log}")
        time.sleep(0.1)
    stop(service)
    raise StartError(f"{service.name} not healthy after {timeout_s:.0f} s; see {service.log}")


def stop(service: Service, timeout_s: float = 10.0) -> None:
    """Stop the process group of ``service``: SIGTERM, then SIGKILL for whatever is left after ``timeout_s``."""
    stop_group(service.pid, timeout_s)
    logger.info("stopped %s (pid %s)", service.name, service.pid)


def stop_group(pid: int, timeout_s: float = 10.0) -> None:
    """Terminate the process group led by ``pid`` (our children are all group leaders) and reap it if ours."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and group_alive(pid):
        _reap(pid)
        time.sleep(0.05)
    if group_alive(pid):
        logger.warning("process group %s ignored SIGTERM for %.0f s; killing it", pid, timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        # A killed process takes a moment to become a zombie; return only once the group is really gone.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and group_alive(pid):
            _reap(pid)
            time.sleep(0.05)
    _reap(pid)


def group_alive(pgid: int) -> bool:
    """True while any non-zombie process of group ``pgid`` exists."""
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
            # fields[0] is the state, fields[2] the process group id
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our exited child, so it does not linger as a zombie."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


# --- The stand-ins --------------------------------------------------------------------------------------------


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

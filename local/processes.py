"""The local stack's child processes: start one detached, wait until it is healthy, stop it; free ports and probes.

Every child runs in its own process group (``start_new_session``) so that stopping it also stops the children it
spawns (``gcloud`` starts a java process). Ports are picked free and checked again right before the start, because
the Pub/Sub emulator started on a taken port keeps running but never listens. Which programs run, and how each is
known to be healthy, is local/emulators.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"


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

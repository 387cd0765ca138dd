"""The local stack: every stand-in plus the functions host (and scheduler loop), started detached and recorded.

State lives in one folder (``.local/`` for ``make up``; a temporary one per test session): ``stack.json`` (the pid
file: what runs, where), ``stack.env`` (the environment a client of the stack needs, KEY=VALUE lines),
``secrets.env`` (generated once, kept across restarts) and ``logs/``. Every process is a group leader, so stopping
one stops the children it spawned. A file lock makes concurrent ``up``/``down`` calls (two terminals, pytest-xdist
workers) safe. Each stand-in's start is local/emulators.py; ``python -m local`` is local/cli.py.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import importlib
import json
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from local import bootstrap, emulators, processes
from local.processes import LOOPBACK, REPO_ROOT, Service

logger = logging.getLogger(__name__)

DEFAULT_STATE_DIR = REPO_ROOT / ".local"
MODELS_ROOT = DEFAULT_STATE_DIR / "models"

DEMO_API_KEY = "rp_local_demo_key"  # the Runpod simulator registers it at start
DEMO_MODEL = "visgate-tiny/sd-tiny"
# A tiny LoRA adapter for DEMO_MODEL: `"loras": [{"hf_model_id": DEMO_LORA}]` on a create request.
DEMO_LORA = "visgate-tiny/sd-tiny-lora"
DEMO_OUTPUT = Path("out/demo.png")  # relative to the repository root, where `make run` runs

EMULATORS = ("firestore", "pubsub", "tasks", "s3", "firebase-auth")
SIMULATORS = ("hub", "runpod")


@dataclass(frozen=True)
class StackConfig:
    """What a stack serves and where it keeps its state."""

    state_dir: Path = DEFAULT_STATE_DIR
    project: str = "visgate-local"
    region: str = "us-central1"
    topology: str = "shared.topology"  # module with FUNCTIONS, TOPICS, SUBSCRIPTIONS, QUEUES, SCHEDULES
    source_root: Path = REPO_ROOT / "functions"
    simulators: bool = True  # the Hub and Runpod simulators, once their packages exist
    extra_env: Mapping[str, str] = field(default_factory=dict)  # added to the functions' environment


class Stack:
    """Start, inspect and stop one local stack (see the module docstring)."""

    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self.state_dir = self.config.state_dir
        self.pid_file = self.state_dir / "stack.json"
        self.env_file = self.state_dir / "stack.env"
        self.log_dir = self.state_dir / "logs"

    # --- state -------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the stack's file lock (one ``up``/``down``/``ensure`` at a time, across processes)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / "stack.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def services(self) -> dict[str, Service]:
        """The recorded services (empty when the stack is down)."""
        if not self.pid_file.is_file():
            return {}
        data = json.loads(self.pid_file.read_text())
        return {name: Service.from_json(entry) for name, entry in data["services"].items()}

    def _record(self, services: Mapping[str, Service]) -> None:
        payload = {"services": {name: service.to_json() for name, service in services.items()}}
        self.pid_file.write_text(json.dumps(payload, indent=2) + "\n")
        lines = [f"{key}={value}" for key, value in self.environment(services).items()]
        self.env_file.write_text("\n".join(lines) + "\n")

    def healthy(self, services: Mapping[str, Service] | None = None) -> bool:
        """True when every recorded process runs and listens (and the functions host answers)."""
        services = self.services() if services is None else services
        if not services:
            return False
        for service in services.values():
            if not processes.process_alive(service.pid):
                return False
            if service.name != "scheduler" and not processes.tcp_listening(service.port, service.host):
                return False
        host = services.get("functions")
        return host is None or processes.http_ok(host.url + "/_host/health")

    def secrets(self) -> dict[str, str]:
        """The local secrets, generated on first use and kept (so data sealed before a restart stays readable)."""
        path = self.state_dir / "secrets.env"
        if not path.is_file():
            self.state_dir.mkdir(parents=True, exist_ok=True)
            values = {
                "TENANT_PEPPER": secrets.token_urlsafe(32),
                "SEALING_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            }
            path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
            path.chmod(0o600)
        values = read_env_file(path)
        if "METRICS_TOKEN" not in values:  # a state dir from before METRICS_TOKEN gains one, kept like the others
            values["METRICS_TOKEN"] = secrets.token_urlsafe(32)
            with path.open("a") as env_file:
                env_file.write(f"METRICS_TOKEN={values['METRICS_TOKEN']}\n")
        return values

    def environment(self, services: Mapping[str, Service]) -> dict[str, str]:
        """The environment of a client of this stack (the functions, the tests, a developer's shell)."""
        env = {"GOOGLE_CLOUD_PROJECT": self.config.project, "REGION": self.config.region, **self.secrets()}
        env["ALLOW_HTTP_LOOPBACK_WEBHOOKS"] = "true"
        if "firestore" in services:
            env["FIRESTORE_EMULATOR_HOST"] = services["firestore"].address
        if "pubsub" in services:
            env["PUBSUB_EMULATOR_HOST"] = services["pubsub"].address
        if "tasks" in services:
            env["CLOUD_TASKS_EMULATOR_HOST"] = services["tasks"].address
        if "firebase-auth" in services:
            env["FIREBASE_AUTH_EMULATOR_HOST"] = services["firebase-auth"].address
        if "s3" in services:
            env |= {
                "AWS_ENDPOINT_URL_S3": services["s3"].url,
                "AWS_ACCESS_KEY_ID": bootstrap.S3_ACCESS_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": bootstrap.S3_SECRET_ACCESS_KEY,
                "AWS_DEFAULT_REGION": bootstrap.S3_REGION,
                "MODEL_CACHE_S3_URL": f"s3://{bootstrap.MODEL_CACHE_BUCKET}/models",
            }
        if "hub" in services:
            env["HF_ENDPOINT"] = services["hub"].url
        if "runpod" in services:
            env["RUNPOD_API_BASE_URL"] = services["runpod"].url
            env["RUNPOD_ENDPOINT_BASE_URL"] = services["runpod"].url
        if "functions" in services:
            env["FUNCTIONS_BASE_URL"] = services["functions"].url
            env["PUBLIC_API_BASE_URL"] = services["functions"].url + "/intake"
        return env | dict(self.config.extra_env)

    # --- start and stop ----------------------------------------------------------------------------------------

    def ensure(self, parts: tuple[str, ...]) -> dict[str, Service]:
        """Start whichever of ``parts`` (names from EMULATORS and SIMULATORS) is not running yet; the services."""
        with self.locked():
            services = self._live_services()
            missing = [part for part in parts if part not in services]
            services |= self._start_parallel(missing)
            self._record(services)
            return services

    def up(self) -> dict[str, Service]:
        """The whole stack (reused when it is already up and healthy); its services."""
        with self.locked():
            services = self._live_services()
            if "functions" in services:
                if self.healthy(services):
                    logger.info("stack already up (%s)", self.pid_file)
                    return services
                logger.warning("stack is unhealthy; restarting it")
                self._stop(services)
                services = {}
            parts = [name for name in EMULATORS if name != "firebase-auth" or emulators.firebase_auth_available()]
            if self.config.simulators:
                parts += [name for name in SIMULATORS if _simulator_available(name)]
            services |= self._start_parallel([part for part in parts if part not in services])
            self._record(services)
            try:
                services |= self._start_functions(services)
            finally:
                self._record(services)
            return services

    def down(self) -> None:
        """Stop everything this stack started (by process group) and remove the pid file."""
        with self.locked():
            self._stop(self.services())

    def _stop(self, services: Mapping[str, Service]) -> None:
        # The host and the scheduler first, so nothing pushes into emulators that are going away.
        for service in sorted(services.values(), key=lambda service: service.name not in ("scheduler", "functions")):
            processes.stop(service)
        self.pid_file.unlink(missing_ok=True)
        self.env_file.unlink(missing_ok=True)

    def _live_services(self) -> dict[str, Service]:
        """The recorded services still alive; a dead one is dropped (and its group stopped) to be restarted."""
        live = {}
        for name, service in self.services().items():
            if processes.process_alive(service.pid):
                live[name] = service
            else:
                logger.warning("%s (pid %s) is gone; it will be restarted", name, service.pid)
                processes.stop_group(service.pid, timeout_s=2)
        return live

    def _start_parallel(self, parts: list[str]) -> dict[str, Service]:
        """Start ``parts`` at once (the java emulators take seconds each); all or nothing."""
        starters: dict[str, Callable[[], Service]] = {
            "firestore": lambda: emulators.start_firestore(
                self.log_dir, self.config.project, REPO_ROOT / "firestore.rules"
            ),
            "pubsub": lambda: emulators.start_pubsub(self.log_dir, self.config.project),
            "tasks": lambda: emulators.start_tasks(self.log_dir, max_retries=_max_task_attempts(self.config.topology)),
            "s3": lambda: emulators.start_s3(self.log_dir),
            "firebase-auth": lambda: emulators.start_firebase_auth(self.log_dir, self.config.project),
            "hub": lambda: emulators.start_hub(self.log_dir, ensure_models()),
            "runpod": lambda: emulators.start_runpod(self.log_dir, DEMO_API_KEY, _worker_command(), env=_worker_env()),
        }
        started: dict[str, Service] = {}
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=max(len(parts), 1)) as pool:
            futures = {part: pool.submit(_retried, starters[part]) for part in parts}
            for part, future in futures.items():
                try:
                    started[part] = future.result()
                except Exception as exc:  # collect, stop the others, then raise the first
                    errors.append(exc)
                    logger.error("could not start %s: %s", part, exc)
        if errors:
            for service in started.values():
                processes.stop(service)
            raise errors[0]
        if "s3" in started:
            bootstrap.create_bucket(started["s3"].url)
        return started

    def _start_functions(self, services: Mapping[str, Service]) -> dict[str, Service]:
        """Bootstrap the topology, then start the functions host (and the scheduler loop when schedules exist)."""
        topology = importlib.import_module(self.config.topology)
        port = processes.free_port()
        base_url = f"http://{LOOPBACK}:{port}"
        host_placeholder = Service(name="functions", pid=0, port=port, log="")
        env = self.environment({**services, "functions": host_placeholder})
        with _environ(env):
            bootstrap.create_pubsub(topology, self.config.project, base_url, bootstrap.dead_letter_topic_of(topology))
            bootstrap.create_queues(topology, self.config.project, self.config.region, env["CLOUD_TASKS_EMULATOR_HOST"])
        host = emulators.start_functions_host(
            self.log_dir,
            env,
            topology=self.config.topology,
            source_root=self.config.source_root,
            port=port,
        )
        started = {"functions": host}
        if topology.SCHEDULES:
            started["scheduler"] = emulators.start_scheduler(self.log_dir, env, base_url, self.config.topology)
        return started


def _retried(start: Callable[[], Service], attempts: int = 2) -> Service:
    """Start once more on failure: a port picked free can be taken by another starter before the child binds it."""
    for _ in range(attempts - 1):
        try:
            return start()
        except processes.StartError as exc:
            logger.warning("%s; trying again on another port", exc)
    return start()


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of ``path`` (blank lines and ``#`` comments skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the Google clients of the bootstrap, then restore them."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _simulator_available(name: str) -> bool:
    if name == "hub":
        return emulators.hub_simulator_available()
    return emulators.runpod_simulator_available()


def _max_task_attempts(topology_module: str) -> int:
    """The emulator has one global retry cap and no backoff: use the largest ``max_attempts`` declared."""
    queues = importlib.import_module(topology_module).QUEUES
    return max((queue.max_attempts for queue in queues), default=-1)


def _worker_command() -> str | None:
    """The real worker as the Runpod simulator's worker process, once the worker package exists."""
    if (REPO_ROOT / "worker" / "main.py").is_file():
        return f"{sys.executable} -m worker.main"
    return None


def _worker_env() -> dict[str, str]:
    """What a worker needs on a CPU machine without GPU (see the design notes on the runpod SDK checks)."""
    return {"RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true", "RUNPOD_SKIP_GPU_CHECK": "true"}


def ensure_models() -> Path:
    """The tiny test models for the Hub simulator, built once into ``.local/models`` (fixed seeds)."""
    script = REPO_ROOT / "scripts" / "build_tiny_models.py"
    MODELS_ROOT.mkdir(parents=True, exist_ok=True)
    # Rebuilt when a model the demo names is missing (a folder built before the LoRA and the families existed).
    if script.is_file() and not all((MODELS_ROOT / repo).is_dir() for repo in (DEMO_MODEL, DEMO_LORA)):
        logger.info("building the tiny models into %s (once)", MODELS_ROOT)
        subprocess.run(  # the builder talks on stdout, which is the KEY=VALUE interface of `up`
            [sys.executable, "-m", "scripts.build_tiny_models", "--out", str(MODELS_ROOT)],
            check=True,
            cwd=REPO_ROOT,
            stdout=sys.stderr,
        )
    return MODELS_ROOT

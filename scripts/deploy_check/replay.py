"""What a deploy runs, replayed offline: each function bundle installed from its own requirements.txt in a fresh
venv and served by functions-framework under exactly Terraform's environment, and the worker image's file set.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hcl2
import requests

from scripts.deploy_check.rules import docker_ignores
from shared import messages, topology
from shared.jobs.ends import WATCH_PATH
from shared.webhooks.steps import DELIVER_PATH, WebhookAttempt

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = "python3.11"
# A pushed image's form (Terraform refuses the all-zero placeholder).
REPLAY_WORKER_IMAGE = "us-central1-docker.pkg.dev/replay/visgate/worker@sha256:" + "1" * 64


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """A command whose failure is reported with its output, not raised."""
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)


def fresh_venv(folder: Path, requirements: Path, before: tuple[list[str], ...] = ()) -> tuple[Path | None, list[str]]:
    """A new venv with ``requirements`` installed in hash-checking mode and nothing else; its python, or problems."""
    shutil.rmtree(folder, ignore_errors=True)
    created = run([PYTHON, "-m", "venv", str(folder)])
    if created.returncode:
        return None, [f"venv: {created.stderr.strip()[-500:]}"]
    python = folder / "bin" / "python"
    for step in [*before, ["--require-hashes", "--no-deps", "-r", str(requirements)]]:
        installed = run([str(python), "-m", "pip", "install", "--quiet", *step])
        if installed.returncode:
            lines = [line for line in installed.stderr.splitlines() if "Location 'file:" not in line]
            return None, [f"pip install {' '.join(step)}: {' '.join(lines)[-800:]}"]
    checked = run([str(python), "-m", "pip", "check"])
    if checked.returncode:
        return None, [f"pip check: {checked.stdout.strip()[-800:]}"]
    return python, []


def terraform_environment(platform_tf: Path, functions_tf: Path) -> tuple[set[str], str]:
    """The names of the variables Terraform gives every function (the platform's ``environment`` and what the
    functions module adds), and the functions module's own expression (to see what it adds)."""
    platform = hcl2.load(platform_tf.open())
    module = next(block['"functions"'] for block in platform["module"] if '"functions"' in block)
    names = set(re.findall(r"\b([A-Z][A-Z0-9_]+)\s*=", module["environment"]))
    functions = hcl2.load(functions_tf.open())
    resource = next(
        b['"google_cloudfunctions2_function"']
        for b in functions["resource"]
        if '"google_cloudfunctions2_function"' in b
    )
    added = resource['"function"']["service_config"][0]["environment_variables"]
    names |= set(re.findall(r"\b([A-Z][A-Z0-9_]+)\s*=", added))
    return names, added


def function_environment(
    names: set[str], function: topology.Function, stack_env: Mapping[str, str], base_url: str
) -> dict[str, str]:
    """Exactly Terraform's variables, with values for this machine; secrets from the environment in place of
    Secret Manager, and the emulators' addresses in place of the Google APIs."""
    values = {
        "GOOGLE_CLOUD_PROJECT": stack_env["GOOGLE_CLOUD_PROJECT"],
        "REGION": stack_env["REGION"],
        "FUNCTIONS_BASE_URL": base_url,
        "PUBLIC_API_BASE_URL": f"{base_url}/intake",
        "TASKS_SERVICE_ACCOUNT_EMAIL": f"fn-invoker@{stack_env['GOOGLE_CLOUD_PROJECT']}.iam.gserviceaccount.com",
        "WORKER_IMAGE": REPLAY_WORKER_IMAGE,
        "THREADS": str(function.concurrency),
        "LOG_EXECUTION_ID": "true",  # only if Terraform sets it (it must not: every log line would be written twice)
    }
    env = {name: values[name] for name in names if name in values}  # SECRET_MANAGER_PROJECT: replaced below
    env |= {
        key: stack_env[key] for key in ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "CLOUD_TASKS_EMULATOR_HOST")
    }
    env |= {
        secret.upper().replace("-", "_"): stack_env[secret.upper().replace("-", "_")]
        for secret in function.secrets
        if secret.upper().replace("-", "_") in stack_env
    }
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Request:
    """The one request a function gets, and the statuses that mean it worked."""

    path: str
    body: bytes
    headers: dict[str, str]
    ok: tuple[int, ...]
    method: str = "POST"


def _task(message: messages.Message, queue: str) -> tuple[bytes, dict[str, str]]:
    headers = {
        "Content-Type": "application/json",
        "X-CloudTasks-QueueName": queue,
        "X-CloudTasks-TaskName": f"replay-{uuid.uuid4().hex}",
        "X-CloudTasks-TaskRetryCount": "0",
        "X-CloudTasks-TaskExecutionCount": "0",
        "X-CloudTasks-TaskETA": str(time.time()),
    }
    return message.model_dump_json().encode(), headers


def _eventarc(message: messages.Message, project: str, topic: str) -> tuple[bytes, dict[str, str]]:
    """A Pub/Sub message as Eventarc delivers it: a binary-mode CloudEvent whose data is the push envelope."""
    message_id = str(uuid.uuid4().int)[:16]
    published = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    body = {
        "message": {
            "data": base64.b64encode(message.model_dump_json().encode()).decode(),
            "messageId": message_id,
            "publishTime": published,
        },
        "subscription": f"projects/{project}/subscriptions/eventarc-us-central1-replay-sub",
    }
    headers = {
        "Content-Type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": message_id,
        "ce-source": f"//pubsub.googleapis.com/projects/{project}/topics/{topic}",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-time": published,
    }
    return json.dumps(body).encode(), headers


def requests_by_function(project: str) -> dict[str, Request]:
    """One real request per function, for a deployment that does not exist (each step acknowledges it)."""
    missing, now = f"replay-{uuid.uuid4().hex[:12]}", datetime.now(UTC)
    sub = lambda path: path.removeprefix(topology.function_url("", path.strip("/").split("/")[0]))  # noqa: E731
    return {
        "intake": Request("/health", b"", {}, (200,), method="GET"),
        "callback": Request(f"/v1/deployments/{missing}/phase", b"{}", {"Content-Type": "application/json"}, (401,)),
        "provision": Request(
            "/",
            *_eventarc(
                messages.DeploymentRequested(deployment_id=missing, requested_at=now),
                project,
                topology.TOPIC_DEPLOYMENT_REQUESTED,
            ),
            ok=(200, 204),
        ),
        "cleanup": Request(
            "/",
            *_eventarc(
                messages.DeploymentDeleteRequested(deployment_id=missing, requested_at=now),
                project,
                topology.TOPIC_DEPLOYMENT_DELETE_REQUESTED,
            ),
            ok=(200, 204),
        ),
        "readiness": Request(
            "/", *_task(messages.ReadinessCheck(deployment_id=missing), topology.QUEUE_READINESS), ok=(200, 204)
        ),
        "webhooks": Request(
            sub(DELIVER_PATH),
            *_task(WebhookAttempt(delivery_id=missing, deployment_id=missing), topology.QUEUE_WEBHOOK_DELIVERY),
            ok=(200, 204),
        ),
        "sweep": Request(
            "/",
            *_task(messages.SweepItem(deployment_id=missing, action="ttl", run_at=now), topology.QUEUE_SWEEP),
            ok=(200, 204),
        ),
        "job-watch": Request(
            sub(WATCH_PATH),
            *_task(messages.JobCheck(deployment_id=missing, job_id="replay-job"), topology.QUEUE_JOB_WATCH),
            ok=(200, 204),
        ),
    }


def serve_once(
    python: Path, bundle: Path, function: topology.Function, env: Mapping[str, str], request: Request
) -> list[str]:
    """Start the bundle's function the way the runtime does (its entry point, from inside the bundle, under
    ``env -i`` plus ``env``), send it ``request``, and check the answer and that every log line is ours, once."""
    port = free_port()
    argv = [
        "env",
        "-i",
        *(f"{key}={value}" for key, value in env.items()),
        str(python),
        "-m",
        "functions_framework",
        f"--target={function.target}",
        "--source=main.py",
        f"--signature-type={function.signature}",
        f"--port={port}",
    ]
    process = subprocess.Popen(argv, cwd=bundle, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    problems: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                answer = requests.request(
                    request.method,
                    f"http://127.0.0.1:{port}{request.path}",
                    data=request.body,
                    headers=request.headers,
                    timeout=30,
                )
                break
            except requests.ConnectionError:
                time.sleep(0.3)
        else:
            return [f"did not start: {(process.stderr.read() if process.stderr else '')[-1500:]}"]
        if answer.status_code not in request.ok:
            problems.append(f"{request.method} {request.path} answered {answer.status_code}: {answer.text[:300]}")
    finally:
        process.terminate()
        stdout, _ = process.communicate(timeout=20)
    for line in filter(None, stdout.splitlines()):
        try:
            entry = json.loads(line)
        except ValueError:
            problems.append(f"a log line that is not JSON: {line[:200]}")
            continue
        if not isinstance(entry, dict) or "severity" not in entry:
            problems.append(f"a log line without severity (written twice?): {line[:200]}")
    return problems


def worker_file_set(dockerfile: Path, dockerignore: Path, lock: Path, workdir: Path) -> list[str]:
    """The worker image's files as the Dockerfile copies them (the ignore file applied), in a fresh venv from the
    worker lock (torch: the CPU build of the same version), must import ``worker.main``."""
    root = workdir / "image"
    shutil.rmtree(root, ignore_errors=True)
    ignore = dockerignore.read_text()
    text = dockerfile.read_text().replace("\\\n", " ")
    problems: list[str] = []
    for sources, destination in re.findall(
        r"^COPY[ \t]+(?!--from)((?:\S+[ \t]+)+)(\S+)[ \t]*$", text, flags=re.MULTILINE
    ):
        for source in sources.split():
            for path in sorted(REPO_ROOT.glob(source.rstrip("/"))):
                files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
                for file in files:
                    relative = str(file.relative_to(REPO_ROOT))
                    if docker_ignores(ignore, relative):
                        continue
                    where = root / destination.removeprefix("/opt/visgate/").lstrip("/")
                    # Docker: one file to a destination without a trailing slash is copied to that very name.
                    if path.is_file() and not destination.endswith("/") and len(sources.split()) == 1:
                        target = where
                    else:
                        target = where / (file.relative_to(path) if path.is_dir() else file.name)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(file, target)
    torch = next((line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ARG TORCH_VERSION=")), None)
    if torch is None:
        return ["worker/Dockerfile has no ARG TORCH_VERSION"]
    python, problems = fresh_venv(workdir / "worker-venv", root / "worker" / lock.name, before=([f"torch=={torch}"],))
    if python is None:
        return problems
    imported = run(
        ["env", "-i", "HOME=/tmp", "WORKER_MODEL_DIR=/tmp", str(python), "-c", "import worker.main"], cwd=root
    )
    if imported.returncode:
        problems.append(f"import worker.main from the image's files: {imported.stderr.strip()[-800:]}")
    return problems


def digest(path: Path) -> str:
    """A short content digest, to name what was checked."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]

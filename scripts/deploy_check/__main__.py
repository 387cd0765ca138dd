"""``make deploy-check``: everything a deploy does that can be done offline, one line per check, non-zero on any
failure (docs/deploy.md). Run after ``make bundles`` (the make target does both)."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import hcl2
from google.cloud import tasks_v2

from local import gen_infra
from local.stack import Stack, StackConfig
from scripts import locks
from scripts.deploy_check import replay, rules
from shared import config, topology
from shared.jobs.ends import WATCH_PATH
from shared.messages import JobCheck
from shared.tasks import TaskScheduler
from shared.webhooks.steps import DELIVER_PATH

ROOT = replay.REPO_ROOT
BUNDLES = ROOT / "build" / "functions"
WORK = ROOT / "build" / "deploy-check"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
CHECKOV_ALLOWLIST = ROOT / "infra" / "checkov-allowlist.json"
# The path each queue's tasks go to, as the code that schedules them names it.
TASK_PATHS = {
    topology.QUEUE_READINESS: topology.function("readiness").path,
    topology.QUEUE_WEBHOOK_DELIVERY: DELIVER_PATH,
    topology.QUEUE_SWEEP: topology.function("sweep").path,
    topology.QUEUE_JOB_WATCH: WATCH_PATH,
}


class _Capture:
    """A Cloud Tasks client that keeps the tasks it is asked to create."""

    def __init__(self) -> None:
        self.tasks: list[tasks_v2.Task] = []

    def queue_path(self, project: str, region: str, queue: str) -> str:
        return f"projects/{project}/locations/{region}/queues/{queue}"

    def create_task(self, parent: str, task: tasks_v2.Task) -> None:
        self.tasks.append(task)


def task_audiences() -> dict[str, tuple[str, str, str]]:
    """queue -> (its function, the URL of a task, its OIDC audience), made by the real TaskScheduler."""
    found = {}
    for queue in topology.QUEUES:
        capture = _Capture()
        base = "https://region-project.cloudfunctions.net"
        scheduler = TaskScheduler(lambda c=capture: c, "project", "region", base, "invoker@project.iam")  # type: ignore[misc]
        scheduler.schedule(queue.name, TASK_PATHS[queue.name], JobCheck(deployment_id="d", job_id="j"), "t", 0)
        request = capture.tasks[0].http_request
        found[queue.name] = (queue.function, request.url, request.oidc_token.audience)
    return found


def required_secrets() -> set[str]:
    names = set()
    for settings_cls in config.SETTINGS_BY_FUNCTION.values():
        names |= {
            config.secret_id_of(f)
            for f in config.secret_fields(settings_cls)
            if settings_cls.model_fields[f].is_required()
        }
    return names


def static_checks() -> list[tuple[str, Callable[[], list[str]]]]:
    build = rules.CloudBuild.parse((ROOT / "cloudbuild.yaml").read_text())
    dockerfiles = {
        str(p.relative_to(ROOT)): p.read_text() for p in (ROOT / ".ci" / "Dockerfile", ROOT / "worker" / "Dockerfile")
    }
    tf = lambda path: hcl2.load((ROOT / path).open())  # noqa: E731
    tfvars = json.loads(gen_infra.TFVARS.read_text())
    secrets = {name: spec["first_version"] for name, spec in tfvars["secrets"].items()}
    return [
        (
            "cloud build: every step image pinned by digest, no tool installed by a step",
            lambda: rules.step_images_pinned(build, dockerfiles),
        ),
        (
            "cloud build: the worker image reaches terraform by its pushed digest",
            lambda: rules.worker_image_by_digest(build),
        ),
        (
            "cloud build: the worker image is built with BuildKit from a trimmed context",
            lambda: rules.worker_build_uses_buildkit(build, (ROOT / "worker" / "Dockerfile.dockerignore").read_text()),
        ),
        (
            "artifact registry: the worker repository is declared, publicly readable, and the one pushed to",
            lambda: rules.worker_registry_public(tf("infra/bootstrap/main.tf"), build),
        ),
        (
            "secrets: a first version for each required secret; functions wait for secrets, grants and APIs",
            lambda: rules.secrets_start_with_a_version(
                tf("infra/modules/platform/main.tf"), secrets, required_secrets()
            ),
        ),
        (
            "oidc: every queue's tasks and scheduler job sign for their function's URL",
            lambda: (
                rules.audiences_are_function_urls(task_audiences(), tfvars["schedules"], topology.function_url)
                + rules.scheduler_module_uses_audience(tf("infra/modules/scheduler/main.tf"))
            ),
        ),
        (
            "functions module: logs once, threads = concurrency, internal ingress, bundles required, private sources",
            lambda: rules.functions_module_rules(tf("infra/modules/functions/main.tf")),
        ),
        (
            "terraform inputs: infra/topology.auto.tfvars.json is generated from shared/topology.py",
            lambda: (
                []
                if gen_infra.TFVARS.read_text() == gen_infra.tfvars_text()
                else ["stale: run python -m local.gen_infra tfvars"]
            ),
        ),
        ("locks: current, and the functions' and worker's agree with the tested dev lock", locks.problems),
        ("terraform fmt -check", _terraform_fmt),
        ("checkov over infra/ and worker/Dockerfile (allowlist with reasons)", _checkov),
    ]


def _terraform_fmt() -> list[str]:
    if shutil.which("terraform") is None:
        return ["terraform is not installed"]
    result = replay.run(["terraform", "fmt", "-check", "-recursive", "infra"], cwd=ROOT)
    return [] if result.returncode == 0 else [f"not formatted: {result.stdout.split()}"]


def _checkov() -> list[str]:
    allowlist: dict[str, str] = json.loads(CHECKOV_ALLOWLIST.read_text())
    problems = [
        f"{CHECKOV_ALLOWLIST.name}: {check} has no reason" for check, reason in allowlist.items() if not reason.strip()
    ]
    skip = ",".join(sorted(allowlist))
    for target in (
        ["-d", "infra", "--framework", "terraform"],
        ["-f", "worker/Dockerfile", "-f", ".ci/Dockerfile", "--framework", "dockerfile"],
    ):
        result = replay.run(
            [str(CHECKOV), *target, "--skip-check", skip, "--compact", "--quiet", "--output", "json"], cwd=ROOT
        )
        try:
            reports = json.loads(result.stdout or "[]")
        except ValueError:
            problems.append(f"checkov {' '.join(target)}: {result.stderr.strip()[-500:]}")
            continue
        for report in reports if isinstance(reports, list) else [reports]:
            for failed in report.get("results", {}).get("failed_checks", []):
                problems.append(
                    f"{failed['check_id']} {failed['resource']} ({failed['file_path']}): {failed['check_name']}"
                )
    return problems


def replay_checks(stack_env: dict[str, str]) -> list[tuple[str, Callable[[], list[str]]]]:
    """Per function: its bundle installed in a fresh venv from the bundle's own requirements.txt, then served under
    Terraform's environment with one real request."""
    lock = ROOT / "requirements" / "functions.lock"
    names, _ = replay.terraform_environment(
        ROOT / "infra/modules/platform/main.tf", ROOT / "infra/modules/functions/main.tf"
    )
    requests = replay.requests_by_function(stack_env["GOOGLE_CLOUD_PROJECT"])
    base = stack_env.get("FUNCTIONS_BASE_URL", "http://127.0.0.1:9")
    checks: list[tuple[str, Callable[[], list[str]]]] = []
    for function in topology.FUNCTIONS:

        def install_and_serve(function: topology.Function = function) -> list[str]:
            bundle = BUNDLES / function.name
            requirements = bundle / "requirements.txt"
            if not (bundle / "main.py").is_file() or not requirements.is_file():
                return [f"no bundle in {bundle} (make bundles)"]
            if requirements.read_bytes() != lock.read_bytes():
                return [f"{requirements} is not requirements/functions.lock"]
            python, problems = replay.fresh_venv(WORK / "venvs" / function.name, requirements)
            if python is None:
                return problems
            env = replay.function_environment(names, function, stack_env, base)
            return replay.serve_once(python, bundle, function, env, requests[function.name])

        request = requests[function.name]
        checks.append(
            (
                f"{function.name}: bundle in a fresh venv (--require-hashes, pip check), serves {request.method} "
                f"{request.path} under Terraform's environment, logs once",
                install_and_serve,
            )
        )
    checks.append(
        (
            "worker image: its files, from the worker lock, import worker.main",
            lambda: replay.worker_file_set(
                ROOT / "worker/Dockerfile",
                ROOT / "worker/Dockerfile.dockerignore",
                ROOT / "worker/requirements.lock",
                WORK,
            ),
        )
    )
    return checks


def report(checks: list[tuple[str, Callable[[], list[str]]]]) -> int:
    failures = 0
    for name, check in checks:
        try:
            problems = check()
        except Exception as exc:  # a check that crashes is a failed check, and the others still run
            problems = [f"{type(exc).__name__}: {exc}"]
        print(f"{'ok  ' if not problems else 'FAIL'} {name}", flush=True)
        for problem in problems:
            print(f"       {problem}", flush=True)
        failures += bool(problems)
    return failures


def main(argv: list[str] | None = None) -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    failures = report(static_checks())
    with tempfile.TemporaryDirectory(prefix="visgate-deploy-check-") as state:
        stack = Stack(StackConfig(state_dir=Path(state)))
        try:
            env = stack.environment(stack.ensure(("firestore", "pubsub", "tasks")))
            failures += report(replay_checks(env))
        finally:
            stack.down()
    print(f"deploy-check: {'all checks passed' if not failures else f'{failures} check(s) failed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

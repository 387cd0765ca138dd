"""The deploy rules of `make deploy-check` (scripts/deploy_check): each holds on the repo's files and fails when one
of the six defects that broke the first deploy (issue 17) is brought back into a copy of the file."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import hcl2
import pytest

from local import gen_infra
from scripts import locks
from scripts.deploy_check import rules
from scripts.deploy_check.__main__ import required_secrets, task_audiences
from shared import topology
from shared.tasks import TaskScheduler

ROOT = Path(__file__).resolve().parents[2]
CLOUDBUILD = (ROOT / "cloudbuild.yaml").read_text()
DOCKERFILES = {name: (ROOT / name).read_text() for name in (".ci/Dockerfile", "worker/Dockerfile")}
DOCKERIGNORE = (ROOT / "worker/Dockerfile.dockerignore").read_text()


def _tf(text: str) -> dict[str, Any]:
    return hcl2.load(io.StringIO(text))


def _read(path: str) -> str:
    return (ROOT / path).read_text()


def _replaced(text: str, old: str, new: str) -> str:
    assert old in text, f"the file no longer holds {old!r}: update this test"
    return text.replace(old, new)


def test_every_rule_holds_on_the_repository() -> None:
    build = rules.CloudBuild.parse(CLOUDBUILD)
    tfvars = json.loads(gen_infra.TFVARS.read_text())
    secrets = {name: spec["first_version"] for name, spec in tfvars["secrets"].items()}
    assert rules.step_images_pinned(build, DOCKERFILES) == []
    assert rules.worker_image_by_digest(build) == []
    assert rules.worker_build_uses_buildkit(build, DOCKERIGNORE) == []
    assert rules.worker_registry_public(_tf(_read("infra/bootstrap/main.tf")), build) == []
    assert (
        rules.secrets_start_with_a_version(_tf(_read("infra/modules/platform/main.tf")), secrets, required_secrets())
        == []
    )
    assert rules.audiences_are_function_urls(task_audiences(), tfvars["schedules"], topology.function_url) == []
    assert rules.scheduler_module_uses_audience(_tf(_read("infra/modules/scheduler/main.tf"))) == []
    assert rules.functions_module_rules(_tf(_read("infra/modules/functions/main.tf"))) == []
    assert locks.problems() == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # Defect 1: a step image by tag, a step that installs python with apt, a tag that is empty on manual builds.
        (
            "hashicorp/terraform:1.11.3@sha256:c2c17884347f9b5f3d71067a3ef1fb736f748979f89b35a2e4b5225735e7fe01",
            "hashicorp/terraform:1.9",
            "not pinned by digest",
        ),
        (
            "    entrypoint: make\n    args: [install]",
            "    entrypoint: bash\n    args: [-c, 'apt-get install -y python3.11 && make install']",
            "installs tools",
        ),
        ("--tag=${_WORKER_REPOSITORY}:${BUILD_ID}", "--tag=${_WORKER_REPOSITORY}:${SHORT_SHA}", "SHORT_SHA"),
    ],
)
def test_cloud_build_step_rules_catch_defect_1(old: str, new: str, expected: str) -> None:
    build = rules.CloudBuild.parse(_replaced(CLOUDBUILD, old, new))
    assert expected in " ".join(rules.step_images_pinned(build, DOCKERFILES))


def test_a_ci_image_with_an_unpinned_base_fails_defect_1() -> None:
    build = rules.CloudBuild.parse(CLOUDBUILD)
    dockerfiles = dict(DOCKERFILES)
    dockerfiles[".ci/Dockerfile"] = dockerfiles[".ci/Dockerfile"].replace(
        "python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b",
        "python:3.11",
    )
    assert "CI image base python:3.11 is not pinned" in " ".join(rules.step_images_pinned(build, dockerfiles))


def test_a_tag_passed_to_terraform_fails_defect_2() -> None:
    broken = _replaced(
        CLOUDBUILD,
        '-var="worker_image=$$(cat /workspace/worker_image.txt)"',
        "-var=worker_image=${_WORKER_REPOSITORY}:${BUILD_ID}",
    )
    assert "not the digest" in " ".join(rules.worker_image_by_digest(rules.CloudBuild.parse(broken)))


def test_a_missing_or_private_repository_fails_defect_3() -> None:
    bootstrap = _read("infra/bootstrap/main.tf")
    build = rules.CloudBuild.parse(CLOUDBUILD)
    private = _replaced(bootstrap, 'member     = "allUsers"', 'member     = "group:ops@example.com"')
    assert "no public read binding" in " ".join(rules.worker_registry_public(_tf(private), build))
    elsewhere = rules.CloudBuild.parse(
        _replaced(
            CLOUDBUILD, "docker.pkg.dev/${PROJECT_ID}/visgate/worker", "docker.pkg.dev/${PROJECT_ID}/other/worker"
        )
    )
    assert "not to the declared repository" in " ".join(rules.worker_registry_public(_tf(bootstrap), elsewhere))


def test_secrets_without_first_versions_fail_defect_4() -> None:
    platform = _read("infra/modules/platform/main.tf")
    tfvars = json.loads(gen_infra.TFVARS.read_text())
    secrets = {name: spec["first_version"] for name, spec in tfvars["secrets"].items()}
    assert "sealing-key is required" in " ".join(
        rules.secrets_start_with_a_version(_tf(platform), secrets | {"sealing-key": None}, required_secrets())
    )
    unordered = _replaced(
        platform, "module.iam, google_secret_manager_secret_version.first", "google_secret_manager_secret_version.first"
    )
    assert "do not wait for module.iam" in " ".join(
        rules.secrets_start_with_a_version(_tf(unordered), secrets, required_secrets())
    )
    rotated_back = _replaced(platform, "ignore_changes = [secret_data, enabled]", "ignore_changes = [enabled]")
    assert "rotation would be undone" in " ".join(
        rules.secrets_start_with_a_version(_tf(rotated_back), secrets, required_secrets())
    )


def test_the_bare_base_url_as_audience_fails_defect_5(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TaskScheduler, "audience", lambda self, path: self._base)
    tfvars = json.loads(gen_infra.TFVARS.read_text())
    found = rules.audiences_are_function_urls(task_audiences(), tfvars["schedules"], topology.function_url)
    assert len(found) == len(topology.QUEUES)
    schedules = {name: {**job, "audience_path": ""} for name, job in tfvars["schedules"].items()}
    assert rules.audiences_are_function_urls({}, schedules, topology.function_url)
    scheduler = _replaced(
        _read("infra/modules/scheduler/main.tf"),
        '"${var.functions_base_url}${each.value.audience_path}"',
        "var.functions_base_url",
    )
    assert rules.scheduler_module_uses_audience(_tf(scheduler))


def test_the_classic_builder_or_a_fat_context_fails_defect_6() -> None:
    classic = _replaced(
        CLOUDBUILD,
        "      - buildx\n      - build\n      - --file=worker/Dockerfile",
        "      - build\n      - --file=worker/Dockerfile",
    )
    classic = _replaced(classic, "  env:\n    - DOCKER_BUILDKIT=1\n", "")
    assert "without BuildKit" in " ".join(
        rules.worker_build_uses_buildkit(rules.CloudBuild.parse(classic), DOCKERIGNORE)
    )
    fat = DOCKERIGNORE.replace("*\n!worker/", "!worker/")
    assert ".venv/bin/python" in " ".join(rules.worker_build_uses_buildkit(rules.CloudBuild.parse(CLOUDBUILD), fat))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "{ THREADS = tostring(each.value.concurrency) }",
            '{ LOG_EXECUTION_ID = "true", THREADS = tostring(each.value.concurrency) }',
            "LOG_EXECUTION_ID",
        ),
        ('each.value.public ? "ALLOW_ALL" : "ALLOW_INTERNAL_ONLY"', '"ALLOW_ALL"', "internal-only"),
        (
            'public_access_prevention    = "enforced"',
            'public_access_prevention    = "inherited"',
            "public access prevention",
        ),
        (
            "max_instance_request_concurrency = each.value.concurrency",
            "max_instance_request_concurrency = 16",
            "THREADS",
        ),
    ],
)
def test_functions_module_rules(old: str, new: str, expected: str) -> None:
    broken = _replaced(_read("infra/modules/functions/main.tf"), old, new)
    assert expected in " ".join(rules.functions_module_rules(_tf(broken)))


def test_docker_ignore_rules() -> None:
    assert rules.docker_ignores(DOCKERIGNORE, ".venv/lib/site.py")
    assert rules.docker_ignores(DOCKERIGNORE, "worker/__pycache__/main.cpython-311.pyc")
    assert rules.docker_ignores(DOCKERIGNORE, "shared/store.py")
    assert not rules.docker_ignores(DOCKERIGNORE, "worker/main.py")
    assert not rules.docker_ignores(DOCKERIGNORE, "shared/signing.py")


def test_a_stale_lock_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "in.txt").write_text("requests\n")
    lock = locks.Lock("requirements/in.lock", ("requirements/in.txt",))
    monkeypatch.setattr(locks, "REPO_ROOT", tmp_path)
    (tmp_path / "requirements" / "in.lock").write_text(
        f"{locks.INPUTS_MARKER}{lock.inputs_digest()}\nrequests==2.34.2 \\\n"
    )
    assert locks.problems((lock,)) == []
    (tmp_path / "requirements" / "in.txt").write_text("requests\nboto3\n")
    assert "stale" in " ".join(locks.problems((lock,)))


def test_the_functions_lock_agrees_with_the_dev_lock() -> None:
    dev, functions = locks.pins(ROOT / "requirements/dev.lock"), locks.pins(ROOT / "requirements/functions.lock")
    assert functions and all(dev[name] == version for name, version in functions.items())
    assert "torch" not in locks.pins(ROOT / "worker/requirements.lock")


def test_the_readme_says_how_a_deployment_sets_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| Variable | Default | Set in a deployment by | What |") :].split("\n\n", 1)[0]
    column: dict[str, str] = {}
    for row in table.splitlines()[2:]:
        names, _, where, _ = row.split(" | ", 3)
        column |= dict.fromkeys(re.findall(r"`([A-Z][A-Z0-9_]+)`", names), where)
    for name in gen_infra.deployer_settings():
        assert "`settings`" in column.get(name, ""), f"README: {name} is set through `settings`"
    for name, variable in gen_infra.TERRAFORM_MANAGED.items():
        assert f"Terraform: `{variable}`" in column[name] or "invoker" in column[name], name

"""The deploy rules a file can show, as pure functions over the files' contents (each returns its problems).

Each rule guards one way the path to a real project broke before (issue 17); tests/unit/test_deploy_rules.py brings
each defect back into a copy of the file and sees its rule fail.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
PINNED_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$")
_SUBSTITUTION = re.compile(r"\$\{(_[A-Z0-9_]+)\}")


@dataclass(frozen=True)
class CloudBuild:
    """cloudbuild.yaml with its user substitutions resolved to their defaults."""

    substitutions: Mapping[str, str]
    steps: list[dict[str, Any]]
    env: list[str]

    @classmethod
    def parse(cls, text: str) -> CloudBuild:
        document = yaml.safe_load(text)
        substitutions = {key: str(value) for key, value in (document.get("substitutions") or {}).items()}
        options = document.get("options") or {}
        return cls(substitutions, list(document.get("steps") or []), list(options.get("env") or []))

    def resolve(self, value: str) -> str:
        for _ in range(5):  # substitutions may name others
            value = _SUBSTITUTION.sub(lambda match: self.substitutions.get(match.group(1), match.group(0)), value)
        return value

    def text_of(self, step: Mapping[str, Any]) -> str:
        """Everything the step runs, resolved (args, entrypoint and env joined)."""
        parts = [str(step.get("entrypoint", "")), *map(str, step.get("args") or []), *map(str, step.get("env") or [])]
        return self.resolve(" ".join(parts))


def dockerfile_bases(dockerfile: str) -> list[str]:
    """The images of a Dockerfile's FROM lines (ARG defaults resolved)."""
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", dockerfile, flags=re.MULTILINE))
    bases = []
    for image in re.findall(r"^FROM\s+(?:--\S+\s+)?(\S+)", dockerfile, flags=re.MULTILINE):
        bases.append(re.sub(r"\$\{?(\w+)\}?", lambda match: args.get(match.group(1), match.group(0)), image))
    return bases


def step_images_pinned(build: CloudBuild, dockerfiles: Mapping[str, str]) -> list[str]:
    """Every step runs in an image pinned by digest, or in the CI image an earlier step built from a Dockerfile of
    the repo whose bases are pinned by digest; no step installs its own tools (apt, npm) or tags with SHORT_SHA."""
    problems: list[str] = []
    built: dict[str, list[str]] = {}
    for index, step in enumerate(build.steps):
        name, step_id = build.resolve(str(step.get("name", ""))), step.get("id", f"#{index}")
        text = build.text_of(step)
        if name not in built and not DIGEST.search(name):
            problems.append(f"step {step_id}: image {name} is not pinned by digest")
        if name in built:
            problems += [
                f"step {step_id}: CI image base {base} is not pinned" for base in built[name] if not DIGEST.search(base)
            ]
        if re.search(r"\bapt(-get)?\s+install\b|\bnpm\s+(ci|install)\b", text):
            problems.append(f"step {step_id}: installs tools itself; give it an image that has them")
        if "SHORT_SHA" in text:
            problems.append(f"step {step_id}: SHORT_SHA is empty on a manual `gcloud builds submit`; use $BUILD_ID")
        tagged = re.search(r"--tag[= ](\S+)", text)
        dockerfile = re.search(r"--file[= ](\S+)", text)
        if tagged and dockerfile and dockerfile.group(1) in dockerfiles:
            built[tagged.group(1)] = dockerfile_bases(dockerfiles[dockerfile.group(1)])
    return problems


def worker_image_by_digest(build: CloudBuild) -> list[str]:
    """Terraform gets the worker image as ``repo@sha256:<digest>`` read back from the registry after the push."""
    apply = next((step for step in build.steps if "apply" in build.text_of(step).split()), None)
    if apply is None:
        return ["no step runs terraform apply"]
    value = re.search(r"worker_image=(\$\$\(cat \S+\)|\S+)", build.text_of(apply))
    if value is None:
        return ["terraform apply is not given worker_image"]
    source = value.group(1).strip("\"'")
    read_file = re.fullmatch(r"\$\$\(cat (\S+)\)", source)
    if read_file is None:
        return [f"worker_image={source} is not the digest read back from the registry (a tag is refused)"]
    writer = next((step for step in build.steps if f"> {read_file.group(1)}" in build.text_of(step)), None)
    if writer is None or "@" not in build.text_of(writer) or "digest" not in build.text_of(writer):
        return [f"no step writes the pushed digest to {read_file.group(1)}"]
    return []


def worker_build_uses_buildkit(build: CloudBuild, dockerignore: str) -> list[str]:
    """The worker image is built with BuildKit, from a context without venvs, node_modules or the local state."""
    problems = []
    step = next((s for s in build.steps if "worker/Dockerfile" in build.text_of(s)), None)
    if step is None:
        return ["no step builds worker/Dockerfile"]
    text = build.text_of(step)
    if "buildx" not in text and "DOCKER_BUILDKIT=1" not in [*build.env, *map(str, step.get("env") or [])]:
        problems.append(
            "the worker image is built without BuildKit (secret mounts, syntax line, per-Dockerfile ignore)"
        )
    for path in (".venv/bin/python", ".venv-tasks/lib/x.py", "local/firebase/node_modules/x.js", ".local/stack.env"):
        if not docker_ignores(dockerignore, path):
            problems.append(f"worker/Dockerfile.dockerignore lets {path} into the build context")
    return problems


def docker_ignores(dockerignore: str, path: str) -> bool:
    """Whether Docker's ignore rules (last match wins, ``!`` re-includes, a match on a parent covers children)
    leave ``path`` out of the context."""
    ignored = False
    for line in dockerignore.splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:depth])) for depth in range(1, len(parts) + 1)):
            ignored = not negated
    return ignored


def audiences_are_function_urls(
    task_audiences: Mapping[str, tuple[str, str, str]], schedules: Mapping[str, Mapping[str, str]], function_url: Any
) -> list[str]:
    """Each queue's tasks (queue -> (function, url, audience), made by the real scheduling code) and each Cloud
    Scheduler job sign their OIDC token for the URL of the function they call, never the bare base URL."""
    problems, base = [], "https://region-project.cloudfunctions.net"
    for queue, (function, url, audience) in task_audiences.items():
        expected = function_url(base, function)
        if audience != expected or not url.split("?")[0].startswith(expected):
            problems.append(f"queue {queue}: a task to {url} has audience {audience}, not {expected}")
    for name, schedule in schedules.items():
        expected = function_url("", schedule["function"])
        if schedule["audience_path"] != expected or not schedule["target_path"].startswith(expected):
            problems.append(f"schedule {name}: audience {schedule['audience_path']} is not the function URL {expected}")
    return problems


def scheduler_module_uses_audience(scheduler_tf: Mapping[str, Any]) -> list[str]:
    """infra/modules/scheduler signs for the topology's audience path and calls the topology's target path."""
    job = scheduler_tf["resource"][0]['"google_cloud_scheduler_job"']['"job"']
    target = job["http_target"][0]
    audience = target["oidc_token"][0]["audience"]
    problems = []
    if "each.value.audience_path" not in audience:
        problems.append(f"the scheduler job's audience is {audience}, not the function URL (audience_path)")
    if "each.value.target_path" not in target["uri"]:
        problems.append(f"the scheduler job calls {target['uri']}, not the topology's target_path")
    return problems


def _plain(value: Any) -> Any:
    """python-hcl2 keeps a string literal's quotes: ``'"allUsers"'`` is ``allUsers``."""
    return value.strip('"') if isinstance(value, str) else value


def _resources(tf: Mapping[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """``name -> body`` of the resources of one kind in a file parsed by python-hcl2."""
    found = {}
    for block in tf.get("resource", []):
        for name, body in block.get(f'"{kind}"', {}).items():
            found[name.strip('"')] = body
    return found


def worker_registry_public(bootstrap_tf: Mapping[str, Any], build: CloudBuild) -> list[str]:
    """The worker image's Artifact Registry repository exists (Terraform), anyone may read it (Runpod pulls it into
    users' accounts, which hold no credentials of ours), and the build pushes to it."""
    repositories = _resources(bootstrap_tf, "google_artifact_registry_repository")
    if not repositories:
        return ["no google_artifact_registry_repository is declared for the worker image"]
    readers = [
        body
        for body in _resources(bootstrap_tf, "google_artifact_registry_repository_iam_member").values()
        if _plain(body.get("member")) == "allUsers" and _plain(body.get("role")) == "roles/artifactregistry.reader"
    ]
    problems = (
        [] if readers else ["the worker repository has no public read binding (allUsers, artifactregistry.reader)"]
    )
    default_id = next(
        (
            _plain(v["default"])
            for b in bootstrap_tf.get("variable", [])
            for k, v in b.items()
            if k.strip('"') == "repository_id"
        ),
        None,
    )
    pushed_to = build.resolve(build.substitutions.get("_WORKER_REPOSITORY", ""))
    if default_id is None or f"/{default_id}/" not in pushed_to:
        problems.append(f"the build pushes to {pushed_to}, not to the declared repository {default_id}")
    return problems


def secrets_start_with_a_version(
    platform_tf: Mapping[str, Any], secrets: Mapping[str, str | None], required: set[str]
) -> list[str]:
    """Every secret a function requires at cold start gets a first version from Terraform (or the functions fail
    to start on a new project), later changes are ignored (rotation), and the functions wait for them, the grants
    and the APIs."""
    problems = [
        f"secret {name} is required but has no generated first version"
        for name in sorted(required)
        if not secrets.get(name)
    ]
    versions = _resources(platform_tf, "google_secret_manager_secret_version")
    if not versions:
        problems.append("no google_secret_manager_secret_version gives the secrets a first version")
    for name, body in versions.items():
        ignored = " ".join(map(str, body.get("lifecycle", [{}])[0].get("ignore_changes", [])))
        if "secret_data" not in ignored:
            problems.append(f"secret version {name} does not ignore later changes (a rotation would be undone)")
    functions: dict[str, Any] = next(
        (b['"functions"'] for b in platform_tf.get("module", []) if '"functions"' in b), {}
    )
    waits_for = " ".join(functions.get("depends_on", []))
    for needed in ("google_secret_manager_secret_version", "module.iam", "module.apis"):
        if needed not in waits_for:
            problems.append(f"the functions do not wait for {needed} (depends_on)")
    return problems


def functions_module_rules(functions_tf: Mapping[str, Any]) -> list[str]:
    """Each log line once (no LOG_EXECUTION_ID), THREADS = the declared concurrency, internal-only ingress for the
    functions only Google calls, a missing bundle fails the plan, and the source bucket is never public."""
    problems = []
    function = _resources(functions_tf, "google_cloudfunctions2_function")["function"]
    service = function["service_config"][0]
    environment = str(service.get("environment_variables", ""))
    if "LOG_EXECUTION_ID" in environment:
        problems.append("LOG_EXECUTION_ID makes functions-framework write every log line a second time")
    if "THREADS" not in environment or "concurrency" not in str(service.get("max_instance_request_concurrency")):
        problems.append("THREADS and max_instance_request_concurrency do not both follow the declared concurrency")
    if "ALLOW_INTERNAL_ONLY" not in str(service.get("ingress_settings")):
        problems.append("the functions only Google calls are not internal-only (ingress_settings)")
    if "fileexists" in str(functions_tf.get("locals", "")):
        problems.append("functions without a bundle are filtered out (a plan would destroy them) instead of failing")
    bundle: dict[str, Any] = next(iter(functions_tf.get("data", [{}])[0].get('"archive_file"', {}).values()), {})
    if "precondition" not in str(bundle.get("lifecycle", "")):
        problems.append("a missing bundle does not fail the plan (no precondition on the bundle)")
    bucket = _resources(functions_tf, "google_storage_bucket").get("source", {})
    if _plain(bucket.get("public_access_prevention")) != "enforced":
        problems.append("the function source bucket does not enforce public access prevention")
    return problems

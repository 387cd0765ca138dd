"""Generate the Terraform inputs from ``shared.topology`` and stage the function source bundles.

* ``python -m local.gen_infra tfvars`` writes ``infra/topology.auto.tfvars.json`` (committed; a test checks it is
  up to date), which every environment reads, so Terraform declares exactly what the local stack bootstraps.
* ``python -m local.gen_infra bundle --out build/functions`` (``make bundles``) stages one folder per function (its
  ``main.py``, the ``shared`` package and ``requirements.txt``: the functions' lock, the whole closure with hashes,
  which Cloud Functions' pip installs in hash-checking mode) for Terraform to zip and upload as its source.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from local.processes import REPO_ROOT
from shared import config, topology

logger = logging.getLogger(__name__)

TFVARS = REPO_ROOT / "infra" / "topology.auto.tfvars.json"
FUNCTIONS_LOCK = REPO_ROOT / "requirements" / "functions.lock"

# Settings Terraform sets from its own variables and resources (what the README's configuration table names); a
# deployer sets every other setting through the environment's `settings` map.
TERRAFORM_MANAGED = {
    "GOOGLE_CLOUD_PROJECT": "project_id",
    "REGION": "region",
    "SECRET_MANAGER_PROJECT": "project_id",
    "FUNCTIONS_BASE_URL": "region`, `project_id",
    "PUBLIC_API_BASE_URL": "public_api_base_url",
    "TASKS_SERVICE_ACCOUNT_EMAIL": "the invoker account",
    "WORKER_IMAGE": "worker_image",
}
# Settings of the local stack and the tests only (emulators, loopback webhooks): never set in a deployment.
LOCAL_ONLY = {"CLOUD_TASKS_EMULATOR_HOST", "ALLOW_HTTP_LOOPBACK_WEBHOOKS"}


def deployer_settings() -> list[str]:
    """The settings a deployer may set through Terraform's ``settings`` map: every field of a function's settings
    class but the secrets (Secret Manager), the ones Terraform manages and the local-only ones."""
    names: set[str] = set()
    for settings_cls in config.SETTINGS_BY_FUNCTION.values():
        names |= {name.upper() for name in settings_cls.model_fields if name not in config.SECRET_FIELDS}
    return sorted(names - set(TERRAFORM_MANAGED) - LOCAL_ONLY)


def render(declared: ModuleType = topology) -> dict[str, Any]:
    """The topology as Terraform variables (maps keyed by name, so plans stay stable when entries move)."""
    subscriptions = {subscription.function: subscription for subscription in declared.SUBSCRIPTIONS}
    functions = {}
    for function in declared.FUNCTIONS:
        trigger = subscriptions.get(function.name)
        functions[function.name] = {
            "entry_point": function.target,
            "signature": function.signature,
            "public": function.public,
            "trigger_topic": trigger.topic if trigger else None,
            "max_delivery_attempts": trigger.max_delivery_attempts if trigger else None,
            # What infra/modules/iam grants the function's service account (least privilege).
            "secrets": list(function.secrets),
            "publishes": list(function.publishes),
            "enqueues": list(function.enqueues),
            "signs_tokens": function.signs_tokens,
            "timeout_s": function.timeout_s,
            "concurrency": function.concurrency,
        }
    return {
        "functions": functions,
        "secrets": {secret.name: {"first_version": secret.first_version} for secret in declared.SECRETS},
        "settings": deployer_settings(),
        "topics": list(declared.TOPICS),
        "dead_letter_topic": declared.TOPIC_DEAD_LETTER,
        "push_subscriptions": {
            subscription.name: {
                "topic": subscription.topic,
                "function": subscription.function,
                "ack_deadline_s": subscription.ack_deadline_s,
                "min_backoff_s": subscription.min_backoff_s,
                "max_backoff_s": subscription.max_backoff_s,
                "max_delivery_attempts": subscription.max_delivery_attempts,
            }
            for subscription in declared.SUBSCRIPTIONS
        },
        "queues": {
            queue.name: {
                "function": queue.function,
                "max_attempts": queue.max_attempts,
                "min_backoff_s": queue.min_backoff_s,
                "max_backoff_s": queue.max_backoff_s,
            }
            for queue in declared.QUEUES
        },
        # Paths below the functions' base URL: what the job calls, and its OIDC audience (the function's URL).
        "schedules": {
            schedule.name: {
                "function": schedule.function,
                "cron": schedule.cron,
                "target_path": topology.function_url("", schedule.function) + schedule.path_suffix,
                "audience_path": topology.function_url("", schedule.function),
            }
            for schedule in declared.SCHEDULES
        },
    }


def tfvars_text(declared: ModuleType = topology) -> str:
    """The exact text of ``infra/topology.auto.tfvars.json``."""
    return json.dumps(render(declared), indent=2, sort_keys=True) + "\n"


def bundle(out: Path, declared: ModuleType = topology) -> list[Path]:
    """Stage ``out/<function>/`` for every declared function; the folders staged. A function without a source is
    an error: Terraform plans every declared function and fails on a missing bundle."""
    staged = []
    for function in declared.FUNCTIONS:
        source = REPO_ROOT / "functions" / function.source
        if not (source / "main.py").is_file():
            raise FileNotFoundError(f"function {function.name} is declared in shared/topology.py but has no {source}")
        target = out / function.name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copytree(REPO_ROOT / "shared", target / "shared", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        # The lock itself: with hashes, the builder's pip installs exactly the tested closure or fails.
        shutil.copyfile(FUNCTIONS_LOCK, target / "requirements.txt")
        staged.append(target)
        logger.info("staged %s", target)
    return staged


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``tfvars`` or ``bundle --out DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("tfvars", help=f"write {TFVARS.relative_to(REPO_ROOT)}")
    bundle_parser = commands.add_parser("bundle", help="stage the function source bundles")
    bundle_parser.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "functions")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.command == "tfvars":
        TFVARS.write_text(tfvars_text())
        logger.info("wrote %s", TFVARS)
    else:
        bundle(args.out)


if __name__ == "__main__":
    main()

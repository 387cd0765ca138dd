"""Generate the Terraform inputs from ``shared.topology`` and stage the function source bundles.

* ``python -m local.gen_infra tfvars`` writes ``infra/topology.auto.tfvars.json`` (committed; a test checks it is
  up to date), which every environment reads, so Terraform declares exactly what the local stack bootstraps.
* ``python -m local.gen_infra bundle --out build/functions`` stages one folder per function (its ``main.py``, the
  ``shared`` package and the pinned requirements) for Terraform to zip and upload as the Cloud Function source.
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

from local.emulators import REPO_ROOT
from shared import topology

logger = logging.getLogger(__name__)

TFVARS = REPO_ROOT / "infra" / "topology.auto.tfvars.json"
REQUIREMENTS = REPO_ROOT / "requirements" / "functions.txt"
CONSTRAINTS = REPO_ROOT / "requirements" / "constraints.txt"


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
        }
    return {
        "functions": functions,
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
        "schedules": {
            schedule.name: {"function": schedule.function, "cron": schedule.cron, "path_suffix": schedule.path_suffix}
            for schedule in declared.SCHEDULES
        },
    }


def tfvars_text(declared: ModuleType = topology) -> str:
    """The exact text of ``infra/topology.auto.tfvars.json``."""
    return json.dumps(render(declared), indent=2, sort_keys=True) + "\n"


def bundle(out: Path, declared: ModuleType = topology) -> list[Path]:
    """Stage ``out/<function>/`` for each function with a source; the folders staged."""
    staged = []
    for function in declared.FUNCTIONS:
        source = REPO_ROOT / "functions" / function.name
        if not (source / "main.py").is_file():
            logger.warning("function %s has no source yet; not bundled", function.name)
            continue
        target = out / function.name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copytree(REPO_ROOT / "shared", target / "shared", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        # Cloud Build's pip has no constraints flag: pin by inlining the constraints as the requirements.
        target.joinpath("requirements.txt").write_text(pinned_requirements())
        staged.append(target)
        logger.info("staged %s", target)
    return staged


def pinned_requirements() -> str:
    """requirements/functions.txt with every package pinned to its version in requirements/constraints.txt."""
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep:
            pins[_normalise(name)] = f"{name.strip()}=={version.strip()}"
    lines = []
    for line in REQUIREMENTS.read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if not requirement or requirement.startswith("-"):
            continue
        name = _normalise(requirement.split("[", 1)[0].split("=", 1)[0].split(">", 1)[0].split("<", 1)[0])
        lines.append(_with_extras(requirement, pins[name]) if name in pins else requirement)
    return "\n".join(lines) + "\n"


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def _with_extras(requirement: str, pin: str) -> str:
    """Keep ``pkg[extra]`` extras on the pinned line."""
    if "[" not in requirement:
        return pin
    extras = requirement[requirement.index("[") : requirement.index("]") + 1]
    name, _, version = pin.partition("==")
    return f"{name}{extras}=={version}"


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

"""The lock files: every deployable and every venv installs its whole dependency closure, pinned with hashes.

* ``python -m scripts.locks compile`` (``make lock``) regenerates every lock with ``uv pip compile
  --generate-hashes``, keeping the versions already locked (uv prefers the pins of an existing output file; delete
  a lock, or pass ``--upgrade``, to move them).
* ``python -m scripts.locks check`` fails when a lock is stale (its inputs changed since it was compiled), or when
  the functions' or the worker's lock pins a package at another version than the dev lock the tests ran with.

The dev lock is compiled first and constrains the functions' and the worker's, so what deploys is what was tested.
torch is the one package that differs on purpose: the dev lock pins the CPU build (``2.13.0+cpu``, from the wheel
that lies on the CI machine's disk, ``TORCH_CPU_FIND_LINKS``); the worker lock leaves torch out and the worker
image installs the CUDA build of the same version from PyTorch's index (docs/decisions/2026-12-lock-files.md).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
INPUTS_MARKER = "# inputs-sha256: "
# Where the CPU build of torch lies (this machine and CI: a file on disk); elsewhere PyTorch's CPU index.
TORCH_CPU_FIND_LINKS = "/opt/wheels"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
_INCLUDE = re.compile(r"^\s*-[rc]\s+(\S+)")


@dataclass(frozen=True)
class Lock:
    """One lock file: what it is compiled from, and the lock it must agree with."""

    path: str
    inputs: tuple[str, ...]
    constrained_by: str | None = None
    leave_out: tuple[str, ...] = ()
    torch_cpu: bool = False  # resolve torch to the CPU build (the test venv)

    def input_files(self) -> list[Path]:
        """The inputs and every file they include (``-r``/``-c``), in a stable order."""
        seen: list[Path] = []
        pending = [REPO_ROOT / name for name in self.inputs]
        if self.constrained_by:
            pending.append(REPO_ROOT / self.constrained_by)
        while pending:
            current = pending.pop(0).resolve()
            if current in seen:
                continue
            seen.append(current)
            if current.suffix == ".txt":
                for line in current.read_text().splitlines():
                    match = _INCLUDE.match(line)
                    if match:
                        pending.append(current.parent / match.group(1))
        return seen

    def inputs_digest(self) -> str:
        """A digest of everything the lock is compiled from (content and options)."""
        digest = hashlib.sha256()
        digest.update(repr((self.leave_out, self.torch_cpu)).encode())
        for path in self.input_files():
            digest.update(str(path.relative_to(REPO_ROOT)).encode())
            if path.resolve() == (REPO_ROOT / self.path).resolve():
                continue
            if self.constrained_by and path == (REPO_ROOT / self.constrained_by).resolve():
                # The constraining lock counts by its pins, not its comments (its own header changes every compile).
                digest.update(repr(sorted(pins(path).items())).encode())
            else:
                digest.update(path.read_bytes())
        return digest.hexdigest()


LOCKS: tuple[Lock, ...] = (
    # The one venv of the tests, the local stack and the tools (and the client package's dependencies).
    Lock("requirements/dev.lock", ("requirements/dev.txt", "client/pyproject.toml"), torch_cpu=True),
    # Every function bundle's requirements.txt is this file (local/gen_infra.py bundle).
    Lock("requirements/functions.lock", ("requirements/functions.txt",), constrained_by="requirements/dev.lock"),
    # The worker image; torch comes from PyTorch's CUDA index in worker/Dockerfile.
    Lock(
        "worker/requirements.lock",
        ("worker/requirements.txt",),
        constrained_by="requirements/dev.lock",
        leave_out=("torch",),
        torch_cpu=True,
    ),
    # Tools with dependency sets of their own, each in its own venv.
    Lock("requirements/tasks-emulator.lock", ("requirements/tasks-emulator.txt",)),
    Lock("requirements/checkov.lock", ("requirements/checkov.txt",)),
)


def pins(lock_file: Path) -> dict[str, str]:
    """``name -> version`` of every package a lock (or requirements file) pins with ``==``."""
    found = {}
    for line in lock_file.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            found[normalise(match.group(1))] = match.group(2)
    return found


def normalise(name: str) -> str:
    """PEP 503 name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def compile_lock(lock: Lock, upgrade: bool = False) -> None:
    """Regenerate one lock with uv, then stamp the digest of its inputs."""
    target = REPO_ROOT / lock.path
    argv = [
        str(Path(sys.executable).with_name("uv")),
        "pip",
        "compile",
        *lock.inputs,
        "--generate-hashes",
        "--python-version=3.11",
        "--python-platform=x86_64-manylinux_2_28",
        "--no-header",
        "--annotation-style=line",
        f"--output-file={lock.path}",
    ]
    if lock.constrained_by:
        argv.append(f"--constraint={lock.constrained_by}")
    argv += [f"--no-emit-package={name}" for name in lock.leave_out]
    if lock.torch_cpu:
        source = os.environ.get("TORCH_CPU_FIND_LINKS", TORCH_CPU_FIND_LINKS)
        argv += (
            [f"--find-links={source}"]
            if Path(source).is_dir()
            else [f"--extra-index-url={TORCH_CPU_INDEX}", "--index-strategy=unsafe-best-match"]
        )
    if upgrade:
        argv.append("--upgrade")
    subprocess.run(argv, cwd=REPO_ROOT, check=True)
    body = target.read_text()
    header = (
        "# Generated by `make lock` (python -m scripts.locks compile) from "
        + ", ".join(lock.inputs)
        + (f", constrained by {lock.constrained_by}" if lock.constrained_by else "")
        + (f"; leaves out {', '.join(lock.leave_out)}" if lock.leave_out else "")
        + ". Do not edit.\n"
        + f"{INPUTS_MARKER}{lock.inputs_digest()}\n"
    )
    target.write_text(header + body)


def problems(locks: Sequence[Lock] = LOCKS) -> list[str]:
    """What makes the locks unusable: missing, stale, or disagreeing with the lock they are constrained by."""
    found = []
    for lock in locks:
        path = REPO_ROOT / lock.path
        if not path.is_file():
            found.append(f"{lock.path}: missing (run `make lock`)")
            continue
        stamped = next((line for line in path.read_text().splitlines() if line.startswith(INPUTS_MARKER)), "")
        if stamped.removeprefix(INPUTS_MARKER) != lock.inputs_digest():
            found.append(f"{lock.path}: stale, its inputs changed since it was compiled (run `make lock`)")
        if lock.constrained_by:
            reference = pins(REPO_ROOT / lock.constrained_by)
            for name, version in pins(path).items():
                if reference.get(name) != version:
                    found.append(f"{lock.path}: {name}=={version} but {lock.constrained_by} has {reference.get(name)}")
        found += [f"{lock.path}: pins {name}, which it must leave out" for name in lock.leave_out if name in pins(path)]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``compile [--upgrade]`` or ``check``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    compile_parser = commands.add_parser("compile", help="regenerate every lock")
    compile_parser.add_argument("--upgrade", action="store_true", help="move every pin to the newest allowed")
    commands.add_parser("check", help="fail when a lock is missing, stale or disagrees with the dev lock")
    args = parser.parse_args(argv)
    if args.command == "compile":
        for lock in LOCKS:
            compile_lock(lock, upgrade=args.upgrade)
        return 0
    found = problems()
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

"""The layout's two rules, read from the code (docs/decisions/2026-12-flows.md): what sits at the root of shared/
never imports a flow folder, and no module of shared/ is part of an import circle. Also: the worker imports only the
shared/ modules its image copies.

Run alone: `python -m pytest tests/unit/test_layers.py` (no emulators)."""

from __future__ import annotations

import ast
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FLOWS = ("deployments", "jobs", "callback", "intake", "webhooks")
# The composition root (the shared.wiring package) builds every flow's collaborators; it alone at the root may name
# them.
COMPOSITION = "shared.wiring"
# Building one of the clients an instance holds once (Runpod, Cloud Tasks, Pub/Sub, Firestore, S3, Firebase).
BUILDS_A_CLIENT = re.compile(
    r"(?<!class )\b(RunpodConnector|TaskScheduler|Publisher|ClientTokenIssuer|SharedModelCache)\("
    r"|\bfirestore\.Client\(|\bboto3\.|\bbuild_(tasks_client|publisher)\("
)


def _modules(package: str) -> dict[str, Path]:
    found = {}
    for path in (REPO / package).rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    return found


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return {name for name in names if name in known}


def _flow(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in FLOWS else None


def test_the_root_of_shared_never_imports_a_flow() -> None:
    shared = _modules("shared")
    upward = {
        module: sorted(name for name in _imports(path, shared) if _flow(name))
        for module, path in shared.items()
        if _flow(module) is None and not _in_composition(module)
    }
    assert {module: names for module, names in upward.items() if names} == {}


def _in_composition(module: str) -> bool:
    return module.split(".")[:2] == COMPOSITION.split(".")


def test_only_the_composition_root_builds_clients_and_only_the_functions_import_it() -> None:
    """Route classes and steps are handed their clients (shared/wiring/, called by functions/*/main.py)."""
    shared = _modules("shared")
    outside = {module: path for module, path in shared.items() if not _in_composition(module)}
    importing = sorted(m for m, path in outside.items() if any(map(_in_composition, _imports(path, shared))))
    building = sorted(
        f"{m}: {hit[0]}" for m, path in outside.items() for hit in BUILDS_A_CLIENT.finditer(path.read_text())
    )
    assert (importing, building) == ([], [])


def test_shared_has_no_import_circle() -> None:
    shared = _modules("shared")
    graph = {module: _imports(path, shared) - {module} for module, path in shared.items()}
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise AssertionError(f"an import circle: {' -> '.join(exc.args[1])}") from exc


def test_the_worker_imports_only_the_shared_modules_its_image_copies() -> None:
    dockerfile = (REPO / "worker" / "Dockerfile").read_text().replace("\\\n", " ")
    copied = set(re.findall(r"shared/(\w+)\.py", re.search(r"^COPY shared/.*$", dockerfile, re.M).group(0)))  # type: ignore[union-attr]
    shared = _modules("shared")
    used = set()
    for path in (REPO / "worker").rglob("*.py"):
        used |= {name.removeprefix("shared.") for name in _imports(path, shared)}
    assert used - {"shared"} <= copied

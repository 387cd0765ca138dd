"""The worker's side of the shared dtype rule (:mod:`shared.hub_rules`): it reads the configs from a folder.

The fetch (Hub or cache) and the loader both call :func:`folder_dtype`, so the files on disk are exactly those
``from_pretrained(..., variant=...)`` reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shared.hub_rules import DtypeName, target_dtype


def read_index(model_dir: Path) -> dict[str, Any]:
    """The folder's ``model_index.json``."""
    index: dict[str, Any] = json.loads((model_dir / "model_index.json").read_text(encoding="utf-8"))
    return index


def folder_dtype(device: str, requested: str | None, model_dir: Path) -> DtypeName:
    """:func:`shared.hub_rules.target_dtype` over a folder that holds ``model_index.json`` and ``*/config.json``
    (the configs alone are enough)."""

    def configs() -> Iterator[dict[str, Any]]:
        for config_path in sorted(model_dir.glob("*/config.json")):
            yield json.loads(config_path.read_text(encoding="utf-8"))

    return target_dtype(device, requested, read_index(model_dir), configs())

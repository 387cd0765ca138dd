"""Which dtype a model loads in and which weight variant files go with it; torch-free, so fetching uses it too.

The fetch (Hub or cache) and the loader apply the same two functions, so the files on disk are exactly those
``from_pretrained(..., variant=...)`` reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

DtypeName = Literal["float16", "bfloat16", "float32"]

# <name>[.<variant>][-00001-of-00003].safetensors, and the shard index <name>.safetensors.index[.<variant>].json
WEIGHT_RE = re.compile(r"^[^.]+(?:\.(?P<variant>[A-Za-z0-9_]+))?(?:-\d{5}-of-\d{5})?\.safetensors$")
INDEX_RE = re.compile(r"^[^.]+\.safetensors\.index(?:\.(?P<variant>[A-Za-z0-9_]+))?\.json$")
VARIANT_OF_DTYPE: dict[str, str] = {"float16": "fp16", "bfloat16": "bf16"}
# Pipelines published in bfloat16, whose activations overflow float16.
BF16_PIPELINES = frozenset(
    {"FluxPipeline", "Flux2Pipeline", "QwenImagePipeline", "SanaPipeline", "HiDreamImagePipeline"}
)


def weight_variant(name: str) -> tuple[bool, str | None]:
    """Whether a component file name is a safetensors weight (or shard index), and its variant."""
    match = WEIGHT_RE.match(name) or INDEX_RE.match(name)
    return (match is not None, match.group("variant") if match else None)


def component_variants(paths: Iterable[str]) -> dict[str, set[str | None]]:
    """For each component folder, the variants its safetensors weights come in (None: the plain files)."""
    found: dict[str, set[str | None]] = {}
    for path in paths:
        folder, _, name = path.partition("/")
        is_weight, variant = weight_variant(name) if name and "/" not in name else (False, None)
        if is_weight and name.endswith(".safetensors"):
            found.setdefault(folder, set()).add(variant)
    return found


def choose_variant(dtype: str, variants: Mapping[str, set[str | None]]) -> str | None:
    """The one weight variant a pipeline loads with (``from_pretrained(variant=...)``), from the target dtype and
    the variants each component ships.

    1. The dtype's own variant (float16 → ``fp16``, bfloat16 → ``bf16``) when any component has it; components
       without it load their plain files.
    2. Else the plain files (float32, or no matching variant).
    3. Except when a component ships variant files only: its variant (``fp16`` first when it ships several) is
       then the pipeline's, since diffusers loads plain files only where a folder lacks the variant.

    Raises:
        ValueError: two components ship only different variants, so no single variant loads them both.
    """
    wanted = VARIANT_OF_DTYPE.get(dtype)
    if wanted and any(wanted in found for found in variants.values()):
        return wanted
    variant_only = [found for found in variants.values() if found and None not in found]
    if not variant_only:
        return None
    common = set.intersection(*variant_only)
    if not common:
        raise ValueError("components ship only different weight variants; no single variant loads them all")
    return "fp16" if "fp16" in common else str(sorted(common, key=str)[0])


def target_dtype(device: str, requested: str | None, model_dir: Path) -> DtypeName:
    """The dtype to load with: the override, else float32 on CPU, else bfloat16 or float16 as the model prefers
    (its pipeline class, or a component config that names ``torch_dtype: bfloat16``).

    Reads only ``model_index.json`` and ``*/config.json``, so it runs on a folder that holds the configs alone.
    """
    if requested:
        return requested  # type: ignore[return-value]  # validated as a DtypeName by the settings
    if device == "cpu":
        return "float32"
    return "bfloat16" if _prefers_bf16(model_dir) else "float16"


def _prefers_bf16(model_dir: Path) -> bool:
    index = json.loads((model_dir / "model_index.json").read_text(encoding="utf-8"))
    if index.get("_class_name") in BF16_PIPELINES:
        return True
    for config_path in model_dir.glob("*/config.json"):
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config.get("torch_dtype", config.get("dtype")) == "bfloat16":
            return True
    return False

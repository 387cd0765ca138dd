"""The Hub rules provisioning and the worker must apply alike: the dtype a model loads in, the weight files that go
with it, and what a Hub refusal means.

Provisioning sizes a model from the files :func:`pipeline_weight_files` picks; the worker fetches exactly those and
loads them with ``from_pretrained(..., variant=choose_variant(...))``, so the estimate counts the bytes that load.
Stdlib only: the worker image copies this file beside shared/signing.py and shared/cache_layout.py.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Literal

DtypeName = Literal["float16", "bfloat16", "float32"]

# <name>[.<variant>][-00001-of-00003].safetensors, and the shard index <name>.safetensors.index[.<variant>].json
WEIGHT_RE = re.compile(r"^[^.]+(?:\.(?P<variant>[A-Za-z0-9_]+))?(?:-\d{5}-of-\d{5})?\.safetensors$")
INDEX_RE = re.compile(r"^[^.]+\.safetensors\.index(?:\.(?P<variant>[A-Za-z0-9_]+))?\.json$")
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")
VARIANT_OF_DTYPE: dict[str, str] = {"float16": "fp16", "bfloat16": "bf16"}
# Pipelines published in bfloat16, whose activations overflow float16.
BF16_PIPELINES = frozenset(
    {"FluxPipeline", "Flux2Pipeline", "QwenImagePipeline", "SanaPipeline", "HiDreamImagePipeline"}
)
# What the Hub answers (401, in X-Error-Message) to a token it does not know; huggingface_hub raises a plain
# HfHubHTTPError for it, not RepositoryNotFoundError.
INVALID_TOKEN = "Invalid credentials in Authorization header"


class WeightSelectionError(ValueError):
    """The repo's weights cannot load as one pipeline (pickles only, or variants no single choice loads)."""


def weight_variant(name: str) -> tuple[bool, str | None]:
    """Whether a component file name is a safetensors weight (or shard index), and its variant."""
    match = WEIGHT_RE.fullmatch(name) or INDEX_RE.fullmatch(name)
    return (match is not None, match.group("variant") if match else None)


def loaded_components(index: Mapping[str, Any]) -> set[str]:
    """The component folders ``model_index.json`` names with a class (``[None, None]`` ones are not loaded)."""
    return {
        name
        for name, spec in index.items()
        if not name.startswith("_") and isinstance(spec, list) and len(spec) == 2 and spec[1] is not None
    }


def target_dtype(
    device: str, requested: str | None, index: Mapping[str, Any], component_configs: Iterable[Mapping[str, Any]]
) -> DtypeName:
    """The dtype to load with: the override, else float32 on CPU, else bfloat16 or float16 as the model prefers
    (its pipeline class, or a component config that names ``torch_dtype: bfloat16``).

    ``component_configs`` is consumed lazily and only when the pipeline class does not decide, so a caller that
    reads configs over the network reads no more than needed.
    """
    if requested:
        return requested  # type: ignore[return-value]  # validated as a DtypeName by the settings
    if device == "cpu":
        return "float32"
    if index.get("_class_name") in BF16_PIPELINES:
        return "bfloat16"
    prefers_bf16 = any(config.get("torch_dtype", config.get("dtype")) == "bfloat16" for config in component_configs)
    return "bfloat16" if prefers_bf16 else "float16"


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
        WeightSelectionError: two components ship only different variants, so no single variant loads them both.
    """
    wanted = VARIANT_OF_DTYPE.get(dtype)
    if wanted and any(wanted in found for found in variants.values()):
        return wanted
    variant_only = [found for found in variants.values() if found and None not in found]
    if not variant_only:
        return None
    common = set.intersection(*variant_only)
    if not common:
        raise WeightSelectionError("components ship only different weight variants; no single variant loads them all")
    return "fp16" if "fp16" in common else str(sorted(common, key=str)[0])


def pipeline_weight_files(paths: Iterable[str], dtype: str, components: Collection[str]) -> list[str]:
    """The safetensors weights (and shard indexes) a pipeline of ``components`` loads in ``dtype``: per component,
    the variant :func:`choose_variant` picks when the component has it, else its plain files.

    Only one level deep (nested exports such as ``unet/onnx/`` are not read by diffusers' folder loader); folders
    that are not components (``[None, None]`` in ``model_index.json``, stray folders) are left out.

    Raises:
        WeightSelectionError: a component with pickled weights only, or weights no single variant loads.
    """
    names: dict[str, list[str]] = {}
    for path in paths:
        folder, _, name = path.partition("/")
        if folder in components and name and "/" not in name:
            names.setdefault(folder, []).append(name)
    variants = component_variants(f"{folder}/{name}" for folder, found in names.items() for name in found)
    for folder, found in names.items():
        if folder not in variants and any(name.endswith(PICKLE_SUFFIXES) for name in found):
            raise WeightSelectionError(f"component {folder!r} has pickled weights only; safetensors are required")
    variant = choose_variant(dtype, variants)
    selected = []
    for folder in sorted(variants):
        use = variant if variant in variants[folder] else None
        if use not in variants[folder]:
            raise WeightSelectionError(f"component {folder!r} has no {variant or 'plain'} weights")
        selected += [f"{folder}/{name}" for name in sorted(names[folder]) if weight_variant(name) == (True, use)]
    return selected


def hub_refusal(status: int | None, error_message: str | None) -> str | None:
    """The failure reason of a Hub HTTP refusal (None: not a refusal of access; the caller decides).

    A 401 whose ``X-Error-Message`` says the credentials are invalid is the token itself (the Hub refuses an
    unknown or expired token on every repo, public ones included); any other 401 or 403 is the repo's gate.
    """
    if status == 401 and error_message == INVALID_TOKEN:
        return "hf_token_invalid"
    if status in (401, 403):
        return "model_gated"
    return None

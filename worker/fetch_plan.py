"""The fetch plan: which of a repo's files a fetch takes, in which order, and for which dtype.

Only the files a diffusers pipeline loads are fetched: ``model_index.json`` and, in each component folder
(``unet/``, ``vae/``, ``tokenizer/``, ...), its JSON configs, tokenizer vocabularies and ``.safetensors`` weights.
Pickles (``.bin``, ``.pt``, ``.ckpt``, ...) never are, nor root-level single-file checkpoints or nested exports
(``unet/onnx/...``), which diffusers' folder loader does not read. The configs come first: the target dtype
(:func:`worker.variants.folder_dtype`) and the files present then pick one weight variant for the pipeline
(:func:`shared.hub_rules.pipeline_weight_files`, the rule provisioning sizes the model by), and only those weights
are fetched. A cache manifest is filtered through the same rules, so a cache that holds a pickle never hands it out.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from shared import hub_rules
from shared.cache_layout import Manifest
from shared.hub_rules import DtypeName, loaded_components, weight_variant
from worker.errors import ModelLoadError
from worker.variants import folder_dtype, read_index

CONFIG_SUFFIXES = (".json", ".txt", ".model")


def _components(paths: Iterable[str]) -> dict[str, list[str]]:
    """The file names of each component folder (one level deep; nested exports are not components)."""
    by_component: dict[str, list[str]] = {}
    for path in paths:
        folder, _, name = path.partition("/")
        if name and "/" not in name:
            by_component.setdefault(folder, []).append(name)
    return by_component


def pipeline_config_files(paths: list[str]) -> list[str]:
    """``model_index.json`` and every component's configs and tokenizer files (no weights).

    Raises:
        ModelLoadError: no ``model_index.json`` (not a diffusers pipeline).
    """
    if "model_index.json" not in paths:
        raise ModelLoadError("not a diffusers pipeline: the repo has no model_index.json")
    selected = ["model_index.json"]
    for folder, names in sorted(_components(paths).items()):
        for name in sorted(names):
            if not weight_variant(name)[0] and name.endswith(CONFIG_SUFFIXES):
                selected.append(f"{folder}/{name}")
    return selected


def pipeline_weight_files(paths: list[str], dtype: str, folder: Path) -> list[str]:
    """The weights the pipeline whose configs are in ``folder`` loads in ``dtype``
    (:func:`shared.hub_rules.pipeline_weight_files`).

    Raises:
        ModelLoadError: a component with pickled weights only, or weights no single variant loads.
    """
    try:
        return hub_rules.pipeline_weight_files(paths, dtype, loaded_components(read_index(folder)))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(str(exc)) from exc


def ordered_files(configs: list[str], weights: list[str]) -> list[str]:
    """``model_index.json`` first, then every other selected file in path order."""
    return ["model_index.json", *sorted({*configs, *weights} - {"model_index.json"})]


def target_dtype(device: str, dtype: DtypeName | None, folder: Path) -> str:
    """The target dtype, from a folder that holds the configs so far.

    Raises:
        ModelLoadError: the pipeline's configs do not read.
    """
    try:
        return folder_dtype(device, dtype, folder)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"unreadable pipeline config: {exc}") from exc


def manifest_subset(manifest: Manifest, paths: Iterable[str]) -> Manifest:
    """The entries of ``manifest`` for ``paths`` only."""
    wanted = set(paths)
    return manifest.model_copy(update={"files": [entry for entry in manifest.files if entry.path in wanted]})

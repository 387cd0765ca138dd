"""What a model can do (its tasks) and which LoRA adapters go on it, decided before any Runpod call.

- Tasks: a pipeline class (``model_index.json``'s ``_class_name``) maps to the tasks diffusers' auto pipelines build
  from its components (``AutoPipelineForImage2Image.from_pipe`` and ``AutoPipelineForInpainting.from_pipe``, the
  calls the worker makes); the image tasks also need a ``vae`` component to encode the input image.
  :data:`PIPELINE_TASKS` mirrors diffusers' ``AUTO_*_PIPELINES_MAPPING`` for the classes we serve.
- LoRA adapters: each is resolved to a commit and one safetensors file (``weight_name``, else the repo's only
  root-level ``.safetensors``, else ``pytorch_lora_weights.safetensors``), with the base model's gated and private
  rules (the same Hub calls with the user's token). The worker gets them as ``WORKER_LORAS`` (JSON, commit-pinned).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from typing import Annotated, Any

import httpx2
from huggingface_hub import HfApi
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.errors import PermanentError, RetryableError
from shared.hub_rules import PICKLE_SUFFIXES, hub_refusal, loaded_components
from shared.job_input import TASKS, Task
from shared.lifecycle import FailureReason
from shared.patterns import WholeMatch

MAX_LORAS = 4
DEFAULT_LORA_WEIGHT = "pytorch_lora_weights.safetensors"
_ALL: frozenset[Task] = frozenset(TASKS)
_TEXT_AND_IMAGE: frozenset[Task] = frozenset({"text_to_image", "image_to_image"})
_TEXT: frozenset[Task] = frozenset({"text_to_image"})

PIPELINE_TASKS: dict[str, frozenset[Task]] = {
    "StableDiffusionPipeline": _ALL,
    "StableDiffusionXLPipeline": _ALL,
    "StableDiffusion3Pipeline": _ALL,
    "FluxPipeline": _ALL,
    "LatentConsistencyModelPipeline": _TEXT_AND_IMAGE,
    "PixArtAlphaPipeline": _TEXT,
    "PixArtSigmaPipeline": _TEXT,
    "SanaPipeline": _TEXT,
    "AuraFlowPipeline": _TEXT,
    "HunyuanDiTPipeline": _TEXT,
    "Lumina2Pipeline": _TEXT,
}
# Pipelines whose LoRA loader the worker calls (diffusers' ``load_lora_weights``); the others have none.
LORA_PIPELINES = frozenset(
    {
        "StableDiffusionPipeline",
        "StableDiffusionXLPipeline",
        "StableDiffusion3Pipeline",
        "FluxPipeline",
        "LatentConsistencyModelPipeline",
    }
)
_REPO_ID = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,95}/[A-Za-z0-9_][A-Za-z0-9._-]{0,95}$"
_REVISION = r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$"
_WEIGHT_NAME = r"^(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9._/-]{0,254}\.safetensors$"


class LoraSpec(BaseModel):
    """One LoRA adapter of a create request (``loras: [...]``)."""

    model_config = ConfigDict(extra="forbid", regex_engine="python-re", strict=True)

    # WholeMatch: re.fullmatch (a look-ahead needs Python's engine, whose "$" also matches before a final newline).
    hf_model_id: Annotated[str, Field(max_length=193), WholeMatch(_REPO_ID)]
    revision: Annotated[str, Field(max_length=255), WholeMatch(_REVISION)] = "main"
    weight_name: Annotated[str, Field(max_length=255), WholeMatch(_WEIGHT_NAME)] | None = None
    scale: Annotated[float, Field(ge=-4, le=4)] = 1.0

    @field_validator("hf_model_id")
    @classmethod
    def _no_double_separators(cls, value: str) -> str:
        if ".." in value or "--" in value:
            raise ValueError("must not contain '..' or '--'")
        return value


class ResolvedLora(BaseModel):
    """A LoRA adapter pinned to a commit and one safetensors file: an item of ``WORKER_LORAS``."""

    model_config = ConfigDict(extra="forbid")

    hf_model_id: str
    revision: Annotated[str, WholeMatch(r"^[0-9a-f]{40}$")]
    weight_name: str
    scale: float = 1.0


def supported_tasks(pipeline_class: str, components: Collection[str]) -> frozenset[Task]:
    """The tasks a pipeline of ``pipeline_class`` with ``components`` (its loaded component folders) can serve."""
    tasks = PIPELINE_TASKS.get(pipeline_class, frozenset())
    if "vae" not in components:
        tasks = tasks & _TEXT
    return tasks


def tasks_of_index(index: Mapping[str, Any]) -> frozenset[Task]:
    """:func:`supported_tasks` of a parsed ``model_index.json``."""
    return supported_tasks(str(index.get("_class_name", "")), loaded_components(index))


def check_task(task: Task, pipeline_class: str, components: Collection[str], model_id: str) -> None:
    """Refuse a task the model cannot do, naming what it can.

    Raises:
        PermanentError: ``unsupported_model``.
    """
    tasks = supported_tasks(pipeline_class, components)
    if task not in tasks:
        can = ", ".join(name for name in TASKS if name in tasks) or "nothing we serve"
        raise PermanentError(
            FailureReason.UNSUPPORTED_MODEL.value,
            f"{model_id} is a {pipeline_class or 'pipeline of unknown class'}, which cannot do {task}; "
            f"it can do: {can}",
        )


def check_loras(loras: Collection[object], pipeline_class: str, model_id: str) -> None:
    """Refuse LoRA adapters on a pipeline without a LoRA loader.

    Raises:
        PermanentError: ``unsupported_model``.
    """
    if loras and pipeline_class not in LORA_PIPELINES:
        raise PermanentError(
            FailureReason.UNSUPPORTED_MODEL.value,
            f"{model_id} is a {pipeline_class}, which takes no LoRA adapters; those that do: "
            + ", ".join(sorted(LORA_PIPELINES)),
        )


def choose_lora_weight(repo_id: str, paths: Iterable[str], weight_name: str | None) -> str:
    """The one safetensors file of a LoRA repo the worker loads.

    Raises:
        PermanentError: ``unsupported_model``: the named file is missing, or no single safetensors file is there
            (a pickle-only adapter is refused: pickles run code when loaded).
    """
    files = set(paths)
    if weight_name is not None:
        if weight_name not in files:
            raise PermanentError(FailureReason.UNSUPPORTED_MODEL.value, f"LoRA {repo_id} has no {weight_name}")
        return weight_name
    roots = sorted(path for path in files if "/" not in path and path.endswith(".safetensors"))
    if len(roots) == 1:
        return roots[0]
    if DEFAULT_LORA_WEIGHT in roots:
        return DEFAULT_LORA_WEIGHT
    if roots:
        raise PermanentError(
            FailureReason.UNSUPPORTED_MODEL.value,
            f"LoRA {repo_id} holds several safetensors files ({', '.join(roots)}): name one as weight_name",
        )
    pickled = any(path.endswith(PICKLE_SUFFIXES) for path in files)
    raise PermanentError(
        FailureReason.UNSUPPORTED_MODEL.value,
        f"LoRA {repo_id} has no safetensors weights" + (" (pickled weights are refused)" if pickled else ""),
    )


def resolve_loras(endpoint: str, timeout_s: float, specs: Iterable[LoraSpec], token: str | None) -> list[ResolvedLora]:
    """Pin each adapter to its commit and weight file, with the user's token.

    Raises:
        PermanentError: ``model_not_found``, ``model_gated``, ``hf_token_invalid`` or ``unsupported_model``, with a
            message that names the adapter.
        RetryableError: the Hub is unreachable or failing.
    """
    api = HfApi(endpoint=endpoint.rstrip("/"))
    auth: str | bool = token or False  # never a token stored on this machine
    resolved = []
    for spec in specs:
        where = f"LoRA {spec.hf_model_id}@{spec.revision}"
        try:
            info = api.model_info(spec.hf_model_id, revision=spec.revision, token=auth, timeout=timeout_s)
            paths = [sibling.rfilename for sibling in info.siblings or []]
            weight = choose_lora_weight(spec.hf_model_id, paths, spec.weight_name)
            if info.gated:
                # A gated repo's info is public but its files are not: the token must have been granted access.
                api.auth_check(spec.hf_model_id, token=auth)
        except HFValidationError as exc:  # the Hub client refuses the id before asking: no retry can help
            raise hub_validation_failure(exc, where) from exc
        except GatedRepoError as exc:
            raise PermanentError(
                FailureReason.MODEL_GATED.value,
                f"{where} is gated: accept its terms on the Hub and pass an hf_token of an account that did",
            ) from exc
        except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
            raise PermanentError(
                FailureReason.MODEL_NOT_FOUND.value, f"{where} was not found (or is private to others)"
            ) from exc
        except HfHubHTTPError as exc:
            raise _http_failure(exc, where) from exc
        except (OSError, httpx2.TransportError) as exc:  # huggingface_hub's transport (httpx2) raises the latter
            raise RetryableError(f"the Hub is unreachable: {type(exc).__name__}") from exc
        if not info.sha:
            raise PermanentError(FailureReason.MODEL_NOT_FOUND.value, f"{where} has no commit")
        resolved.append(
            ResolvedLora(hf_model_id=spec.hf_model_id, revision=info.sha, weight_name=weight, scale=spec.scale)
        )
    return resolved


def loras_env(loras: Iterable[ResolvedLora]) -> str:
    """The ``WORKER_LORAS`` value: a JSON list of resolved adapters."""
    return json.dumps([lora.model_dump() for lora in loras], separators=(",", ":"))


def hub_validation_failure(exc: HFValidationError, where: str) -> PermanentError:
    """``model_not_found`` with the Hub client's own reason, on one line (the id may hold a control character)."""
    reason = " ".join(str(exc).split())
    return PermanentError(
        FailureReason.MODEL_NOT_FOUND.value, f"{' '.join(where.split())} is no valid Hub id: {reason}"
    )


def _http_failure(exc: HfHubHTTPError, where: str) -> Exception:
    status = exc.response.status_code if exc.response is not None else 0
    refusal = hub_refusal(status, exc.response.headers.get("X-Error-Message") if exc.response is not None else None)
    if refusal == FailureReason.HF_TOKEN_INVALID:
        return PermanentError(
            FailureReason.HF_TOKEN_INVALID.value, "the Hub refused the hf_token as invalid or expired"
        )
    if refusal == FailureReason.MODEL_GATED:
        return PermanentError(FailureReason.MODEL_GATED.value, f"the Hub refused access to {where} with this token")
    if status == 404:
        return PermanentError(FailureReason.MODEL_NOT_FOUND.value, f"{where} was not found")
    return RetryableError(f"the Hub answered {status} for {where}")

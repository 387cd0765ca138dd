"""Model checks on the Hugging Face Hub: exists, accessible, a text-to-image pipeline we serve, and how big.

Everything goes through ``huggingface_hub`` against ``HF_ENDPOINT`` with the user's token, so the same code runs
against the Hub and the simulator. The VRAM estimate comes from the weights the pipeline will really load, at the
dtype the worker will load them in, both chosen by the worker's own rule (:mod:`shared.hub_rules`): safetensors only
(pickles are refused: they execute code on load), per component exactly one set of files; parameters counted from
the safetensors headers (read with Range requests, never the weights themselves). The component configs and the
weight files' headers are read concurrently: they are a dozen small requests, and provisioning waits on them.
"""

from __future__ import annotations

import json
import math
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from shared import hub_rules
from shared.errors import PermanentError, RetryableError
from shared.hub_rules import DtypeName, WeightSelectionError, hub_refusal, loaded_components, target_dtype
from shared.lifecycle import FailureReason
from shared.model_tasks import hub_validation_failure

MODEL_INDEX = "model_index.json"

# Text-to-image pipelines the worker serves (via AutoPipelineForText2Image), with their default resolution: the
# activation headroom is sized for it.
SUPPORTED_PIPELINES: dict[str, int] = {
    "StableDiffusionPipeline": 512,
    "LatentConsistencyModelPipeline": 512,
    "StableDiffusionXLPipeline": 1024,
    "StableDiffusion3Pipeline": 1024,
    "FluxPipeline": 1024,
    "PixArtAlphaPipeline": 1024,
    "PixArtSigmaPipeline": 1024,
    "SanaPipeline": 1024,
    "AuraFlowPipeline": 1024,
    "HunyuanDiTPipeline": 1024,
    "Lumina2Pipeline": 1024,
}

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
_HALF_PRECISION = ("fp16", "bf16")
_MAX_HEADER_BYTES = 64 * 1024 * 1024
# One Range read of this many bytes holds most safetensors headers with their length (huggingface_hub's own
# get_safetensors_metadata reads 100 kB first too); a longer header costs a second read.
_FIRST_READ_BYTES = 100_000
_CONCURRENT_READS = 8
_GB = 1024**3
# Headroom beyond the weights: the CUDA context and allocator slack, plus activations that grow with the image
# area (measured roughly as 1.5 GB for a 512x512 UNet step at half precision).
_CONTEXT_GB = 1.0
_ACTIVATION_GB_AT_512 = 1.5
_WEIGHT_SLACK = 1.1


@dataclass(frozen=True)
class ModelReport:
    """What provisioning records about a model."""

    commit_sha: str
    pipeline_class: str
    dtype: DtypeName
    weights_gb: float
    vram_estimate_gb: float
    # The component folders model_index.json loads (what the task check reads, shared.model_tasks).
    components: frozenset[str] = frozenset()


class HubInspector:
    """Built once per instance; one call per deployment."""

    def __init__(self, endpoint: str, timeout_s: float, dtype: DtypeName | None) -> None:
        """``dtype``: the ``WORKER_DTYPE`` the workers are sent, if any; else each model's own preference."""
        self._endpoint = endpoint.rstrip("/")
        self._api = HfApi(endpoint=self._endpoint)
        self._timeout = timeout_s
        self._dtype = dtype

    def inspect(self, repo_id: str, revision: str, token: str | None) -> ModelReport:
        """Check the model and estimate its VRAM at the dtype its worker will load it in.

        Raises:
            PermanentError: ``model_not_found``, ``model_gated``, ``hf_token_invalid`` or ``unsupported_model``.
            RetryableError: the Hub is unreachable or failing.
        """
        auth: str | bool = token or False  # False: never fall back to a token stored on this machine
        try:
            info = self._api.model_info(
                repo_id, revision=revision, token=auth, files_metadata=True, timeout=self._timeout
            )
            sizes = {s.rfilename: int(s.size or 0) for s in info.siblings or []}
            if MODEL_INDEX not in sizes or not info.sha:
                raise PermanentError(
                    FailureReason.UNSUPPORTED_MODEL.value, f"{repo_id} has no {MODEL_INDEX}: not a diffusers pipeline"
                )
            index = json.loads(self._read(repo_id, info.sha, MODEL_INDEX, auth))
            pipeline = str(index.get("_class_name", ""))
            if pipeline not in SUPPORTED_PIPELINES:
                raise PermanentError(
                    FailureReason.UNSUPPORTED_MODEL.value,
                    f"{repo_id} is a {pipeline or 'pipeline of unknown class'}; supported: "
                    + ", ".join(sorted(SUPPORTED_PIPELINES)),
                )
            sha = info.sha
            paths = [f"{name}/config.json" for name in sorted(loaded_components(index))]
            with ThreadPoolExecutor(_CONCURRENT_READS, thread_name_prefix="hub-read") as reads:
                raw = list(
                    reads.map(lambda path: self._read(repo_id, sha, path, auth), [p for p in paths if p in sizes])
                )
                # Parsed as the rule asks for them, as before: a config it never looks at cannot fail the check.
                configs = (json.loads(body) for body in raw)
                # A GPU worker: the device is always cuda, so the dtype is the override or the model's preference.
                dtype = target_dtype("cuda", self._dtype, index, configs)
                files = weight_files(index, sizes, dtype)
                params = sum(reads.map(lambda file: self._params(repo_id, sha, file[0], file[1], auth), files))
        except HFValidationError as exc:  # the Hub client refuses the id before asking: no retry can help
            raise hub_validation_failure(exc, f"{repo_id}@{revision}") from exc
        except GatedRepoError as exc:
            raise PermanentError(
                FailureReason.MODEL_GATED.value,
                f"{repo_id} is gated: accept its terms on the Hub and pass an hf_token of an account that did",
            ) from exc
        except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
            raise PermanentError(
                FailureReason.MODEL_NOT_FOUND.value, f"{repo_id}@{revision} was not found (or is private to others)"
            ) from exc
        except HfHubHTTPError as exc:
            raise _http_failure(exc, repo_id) from exc
        except json.JSONDecodeError as exc:  # before OSError: a config no worker could read either
            raise PermanentError(
                FailureReason.UNSUPPORTED_MODEL.value, f"{repo_id} has a config that is not valid JSON: {exc}"
            ) from exc
        except OSError as exc:  # transport errors of the Hub client are OSErrors
            raise RetryableError(f"the Hub is unreachable: {type(exc).__name__}") from exc
        weights_gb = params * DTYPE_BYTES[dtype] / _GB
        return ModelReport(
            commit_sha=info.sha,
            pipeline_class=pipeline,
            dtype=dtype,
            weights_gb=round(weights_gb, 3),
            vram_estimate_gb=estimate_vram_gb(weights_gb, SUPPORTED_PIPELINES[pipeline], dtype),
            components=frozenset(loaded_components(index)),
        )

    def _read(self, repo_id: str, sha: str, path: str, token: str | bool, byte_range: str | None = None) -> bytes:
        headers = build_hf_headers(token=token)
        if byte_range:
            headers["Range"] = byte_range
        url = hf_hub_url(repo_id, path, revision=sha, endpoint=self._endpoint)
        response = get_session().get(url, headers=headers, timeout=self._timeout, follow_redirects=True)
        hf_raise_for_status(response)
        return bytes(response.content)

    def _params(self, repo_id: str, sha: str, path: str, size: int, token: str | bool) -> int:
        """Parameters in one safetensors file; a half-precision variant's size says it without a read."""
        if hub_rules.weight_variant(path.rsplit("/", 1)[-1])[1] in _HALF_PRECISION:
            return size // 2
        first = self._read(
            repo_id, sha, path, token, f"bytes=0-{(min(size, _FIRST_READ_BYTES) or _FIRST_READ_BYTES) - 1}"
        )
        (length,) = struct.unpack("<Q", first[:8])
        if not 0 < length <= _MAX_HEADER_BYTES:
            raise PermanentError(FailureReason.UNSUPPORTED_MODEL.value, f"{path} is not a valid safetensors file")
        if len(first) >= 8 + length:
            header = json.loads(first[8 : 8 + length])
        else:
            header = json.loads(self._read(repo_id, sha, path, token, f"bytes=8-{7 + length}"))
        return sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")


def estimate_vram_gb(weights_gb: float, resolution: int, dtype: str) -> float:
    """Weights with slack, the CUDA context, and activations scaled by image area and precision."""
    activations = _ACTIVATION_GB_AT_512 * (resolution / 512) ** 2 * DTYPE_BYTES[dtype] / 2
    return round(weights_gb * _WEIGHT_SLACK + _CONTEXT_GB + activations, 1)


def weight_files(index: dict[str, Any], sizes: dict[str, int], dtype: str) -> list[tuple[str, int]]:
    """The safetensors files (with their sizes) the worker fetches and loads at ``dtype``
    (:func:`shared.hub_rules.pipeline_weight_files`; shard indexes hold no parameters and are left out).

    Raises:
        PermanentError: ``unsupported_model``: pickled weights only, or variants no single choice loads.
    """
    try:
        paths = hub_rules.pipeline_weight_files(sizes, dtype, loaded_components(index))
    except WeightSelectionError as exc:
        raise PermanentError(FailureReason.UNSUPPORTED_MODEL.value, str(exc)) from exc
    return [(path, sizes[path]) for path in paths if path.endswith(".safetensors")]


def _http_failure(exc: HfHubHTTPError, repo_id: str) -> Exception:
    status = exc.response.status_code if exc.response is not None else 0
    refusal = hub_refusal(status, exc.response.headers.get("X-Error-Message") if exc.response is not None else None)
    if refusal == FailureReason.HF_TOKEN_INVALID:
        return PermanentError(
            FailureReason.HF_TOKEN_INVALID.value,
            "the Hub refused the hf_token as invalid or expired; pass a valid token, or none for a public model",
        )
    if refusal == FailureReason.MODEL_GATED:
        return PermanentError(FailureReason.MODEL_GATED.value, f"the Hub refused access to {repo_id} with this token")
    if status == 404:
        return PermanentError(FailureReason.MODEL_NOT_FOUND.value, f"{repo_id} was not found")
    return RetryableError(f"the Hub answered {status} for {repo_id}")

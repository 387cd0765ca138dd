"""The device and dtype a pipeline loads on, and the one error that is the device's fault: out of memory.

Device and dtype are explicit: ``WORKER_DEVICE``/``WORKER_DTYPE`` when set; otherwise CUDA with float16 (bfloat16
for models whose configs ask for it, e.g. FLUX) when CUDA is present, else CPU with float32. Out of memory is told
apart from every other failure: at start-up it is reported as ``out_of_memory`` (any other load or warm-up failure
is ``model_load_failed``), in a job as an ``out_of_memory`` error.
"""

from __future__ import annotations

from pathlib import Path

import torch

from shared.lifecycle import FailureReason
from worker.errors import WorkerError
from worker.variants import folder_dtype

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def resolve_device(requested: str | None) -> str:
    """``requested`` when given (``cuda`` must then be present), else ``cuda`` when available, else ``cpu``."""
    available = torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise WorkerError("WORKER_DEVICE=cuda but no CUDA device is visible", reason=FailureReason.INTERNAL)
    return requested or ("cuda" if available else "cpu")


def resolve_dtype(device: str, requested: str | None, model_dir: Path) -> torch.dtype:
    """The dtype to load with (:func:`worker.variants.folder_dtype`, as the fetch decided it)."""
    return DTYPES[folder_dtype(device, requested, model_dir)]


def gpu_name(device: str) -> str | None:
    """The CUDA device's name (Runpod's GPU type ids are these names), or None on CPU."""
    return torch.cuda.get_device_name(0) if device == "cuda" else None


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a device (or host) out-of-memory error."""
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()

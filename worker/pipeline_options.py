"""What a pipeline load is asked for (the ``WORKER_*`` settings of the task, LoRA and speed) and what it reports.

:class:`LoadOptions` carries the task, the fetched LoRA adapters and the speed settings into the load;
:class:`LoadReport` is what the load did (the effective settings, the fused adapters, their times), which
``ready``'s ``timings`` carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.job_input import Task


@dataclass(frozen=True)
class LoraWeights:
    """A fetched LoRA adapter: its safetensors file and the scale it is fused at."""

    model_id: str
    revision: str
    path: Path
    scale: float = 1.0


@dataclass(frozen=True)
class LoadOptions:
    """How the pipeline is built (the ``WORKER_*`` settings of the task, LoRA and speed)."""

    task: Task = "text_to_image"
    loras: tuple[LoraWeights, ...] = ()
    channels_last: bool = True
    sdpa: bool = True
    compile: bool = False
    compile_mode: str = "default"
    vae_tiling_above_pixels: int = 1024 * 1024


@dataclass(frozen=True)
class LoadReport:
    """What the load did, for ``ready``'s timings: the effective settings, the fused adapters and their time."""

    settings: dict[str, Any]
    loras: list[dict[str, Any]]
    lora_s: float = 0.0
    compile_s: float = 0.0

    def timings(self) -> dict[str, Any]:
        """The extra fields of ``ready``'s ``timings``."""
        return {
            "lora_s": round(self.lora_s, 3),
            "compile_s": round(self.compile_s, 3),
            "loras": self.loras,
            "settings": self.settings,
        }

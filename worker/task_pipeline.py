"""Build the task's pipeline (``WORKER_TASK``) over the loaded text-to-image one.

LoRA adapters are loaded into the text-to-image pipeline and fused at their scales, then unloaded: the fused weights
stay, the adapter layers go. The task's pipeline is built from the same components with
``AutoPipelineFor{Image2Image,Inpainting}.from_pipe``: no second copy of the weights.
"""

from __future__ import annotations

import warnings
from typing import Any

from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

from shared.job_input import Task
from worker.devices import is_out_of_memory
from worker.errors import ModelLoadError
from worker.pipeline_options import LoraWeights

TASK_PIPELINES: dict[str, Any] = {"image_to_image": AutoPipelineForImage2Image, "inpainting": AutoPipelineForInpainting}


def fuse_loras(pipe: Any, loras: tuple[LoraWeights, ...]) -> None:
    """Load each adapter into ``pipe``, fuse them all at their scales, then drop the adapter layers.

    Raises:
        ModelLoadError: an adapter does not load into this pipeline (any error but out of memory).
    """
    if not loras:
        return
    names = [f"lora_{index}" for index in range(len(loras))]
    current = loras[0]
    try:
        for name, lora in zip(names, loras, strict=True):
            current = lora
            with warnings.catch_warnings():
                # PEFT warns on every adapter after the first that a model holding several is intended: it is.
                warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
                pipe.load_lora_weights(str(lora.path.parent), weight_name=lora.path.name, adapter_name=name)
        pipe.set_adapters(names, adapter_weights=[lora.scale for lora in loras])
        pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
        pipe.unload_lora_weights()
    except Exception as exc:
        if is_out_of_memory(exc):
            raise
        raise ModelLoadError(
            f"LoRA {current.model_id}@{current.revision[:12]} does not load into {type(pipe).__name__}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def task_pipeline(pipe: Any, task: Task, model_id: str) -> Any:
    """The pipeline of ``task`` over the components of ``pipe`` (the same modules: no weights are copied).

    Raises:
        ModelLoadError: diffusers has no pipeline of that task for this model's class.
    """
    auto = TASK_PIPELINES.get(task)
    if auto is None:
        return pipe
    try:
        return auto.from_pipe(pipe)
    except Exception as exc:
        raise ModelLoadError(
            f"{model_id} ({type(pipe).__name__}) has no {task} pipeline: {type(exc).__name__}: {exc}"
        ) from exc

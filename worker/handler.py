"""The Runpod handler: a thin adapter from a Runpod job to :meth:`worker.loaded_model.LoadedModel.generate`.

Accepted job shapes (``job["input"]``):

- ``{"warmup": true}``: the warm-up job provisioning submits; answered ``{"warmup": true}``. The worker takes
  jobs only after its start-up proved the model, so completing it means the model works.
- A generation, :class:`worker.schemas.GenerateInput`::

    {"prompt": "a red fox",                 # required, 1..2000 chars, not blank
     "negative_prompt": "blurry",           # optional (pipelines that take one)
     "num_inference_steps": 4,              # 1..100, default by model family
     "guidance_scale": 0.0,                 # 0..30, default by model family
     "width": 512, "height": 512,           # multiples of 8 in 64..2048, default the model's native size
     "seed": 42,                            # optional, 0..2**32-1; each image returns the seed that reproduces it
     "num_images": 1,                       # 1..4
     "output_format": "png",                # png | jpeg | webp
     "image": "data:image/png;base64,...",  # image_to_image, inpainting: data URL, base64 or https URL
     "mask_image": "https://...",           # inpainting: white is repainted, black kept
     "strength": 0.6}                       # image tasks, 0..1; default the pipeline's

  The deployment's task (``WORKER_TASK``) decides which image fields a job needs and takes; images are limited to
  20 MB and 4096x4096, and URLs to public https addresses (:mod:`worker.images`). Both images are resized to the
  requested size (default the model's native size) before the pipeline runs.

  Answered with :class:`worker.schemas.GenerateOutput`: ``{"images": [{"image": <base64>} | {"url": ...}, "seed"],
  "timings": {"inference_s"}, "model", "parameters"}``. Images are uploaded and returned as presigned URLs
  (``OUTPUT_URL_EXPIRY_S``) when the job carries Runpod's ``s3Config`` (``{accessId, accessSecret, bucketName,
  endpointUrl}``, next to ``input``; keys under ``OUTPUT_S3_PREFIX``) or the worker has the ``BUCKET_*`` env;
  otherwise they are inline base64.

Values must have their JSON type (``4``, not ``"4"``, ``4.0`` or ``true``). Anything else (unknown fields,
out-of-range values) fails the job with a one-line message: the runpod SDK marks a
job FAILED when the handler returns a dict with an ``error`` key (serverless/modules/rp_job.py ``run_job``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from worker.devices import is_out_of_memory
from worker.images import ImageFetcher, read_image
from worker.loaded_model import LoadedModel
from worker.output import OutputBuckets, encode_image, to_base64
from worker.schemas import (
    GenerateInput,
    GenerateOutput,
    ImageOut,
    S3Config,
    Timings,
    WarmupInput,
    describe_validation_error,
)

logger = logging.getLogger(__name__)

Job = dict[str, Any]
Handler = Callable[[Job], dict[str, Any]]


def _error(message: str) -> dict[str, Any]:
    """The one failure shape: the SDK reports the job FAILED with this message."""
    return {"error": message}


class _BadInput(Exception):
    """The job input is not one of the accepted shapes; the message says why."""


def _parse(job: Job) -> tuple[GenerateInput | WarmupInput, S3Config | None]:
    """The validated input and the job's own output bucket (Runpod's ``s3Config``), if any."""
    raw = job.get("input")
    if not isinstance(raw, dict):
        raise _BadInput("invalid input: the job input must be a JSON object")
    try:
        if "warmup" in raw:
            return WarmupInput.model_validate(raw), None
        request = GenerateInput.model_validate(raw)
        s3_config = S3Config.model_validate(job["s3Config"]) if job.get("s3Config") else None
    except ValidationError as exc:
        raise _BadInput(describe_validation_error(exc)) from exc
    return request, s3_config


def make_handler(
    model: LoadedModel, outputs: OutputBuckets | None = None, fetcher: ImageFetcher | None = None
) -> Handler:
    """A Runpod handler bound to a loaded model and its output buckets (default: a job's own ``s3Config`` only);
    ``fetcher`` reads image URLs (default: the public-address rules, no loopback)."""
    output_buckets = outputs or OutputBuckets()
    image_fetcher = fetcher or ImageFetcher()

    def handler(job: Job) -> dict[str, Any]:
        job_id = str(job.get("id", "local"))
        try:
            request, s3_config = _parse(job)
        except _BadInput as exc:
            return _error(str(exc))
        if isinstance(request, WarmupInput):
            return {"warmup": True}
        bucket = output_buckets.for_job(s3_config)
        try:
            model.check(request)
            image = read_image(request.image, "image", image_fetcher) if request.image else None
            mask = read_image(request.mask_image, "mask_image", image_fetcher) if request.mask_image else None
            generation = model.generate(request, image, mask)
        except ValueError as exc:
            return _error(f"invalid input: {exc}")
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
            logger.error("out of memory during generation", extra={"job_id": job_id})
            return _error("out_of_memory: the request does not fit in GPU memory; try fewer or smaller images")
        images = []
        for image, seed in zip(generation.images, generation.seeds, strict=True):
            data = encode_image(image, request.output_format)
            if bucket is not None:
                images.append(ImageOut(url=bucket.upload(job_id, data, request.output_format), seed=seed))
            else:
                images.append(ImageOut(image=to_base64(data), seed=seed))
        logger.info(
            "job done",
            extra={"job_id": job_id, "images": len(images), "inference_s": round(generation.inference_s, 3)},
        )
        output = GenerateOutput(
            images=images,
            timings=Timings(inference_s=round(generation.inference_s, 4)),
            model=model.model_id,
            parameters=generation.parameters,
        )
        return output.model_dump(exclude_none=True)

    return handler

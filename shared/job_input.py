"""The generation job input: one model the worker validates jobs with and the API validates ``/run`` bodies with.

Validation is strict (docs/contracts.md "Jobs"): unknown fields, out-of-range values, sizes that are not multiples
of 8, values of the wrong JSON type (``true``, ``"4"`` or ``1.0`` for an integer) and blank prompts are errors,
never silently corrected. Seeds are 0..2**32-1, so every JavaScript client holds them exactly.

Images (``image``, ``mask_image``) are references, checked here for their form only: a ``data:image/...;base64,``
URL, bare base64, or an ``https://`` URL. Their content (at most :data:`MAX_IMAGE_BYTES`, an image content type, at
most :data:`MAX_IMAGE_SIDE` pixels a side once decoded) and, for URLs, the address they point at (no private,
loopback, link-local or metadata ranges, also after a redirect) are checked where they are read: the worker.
Which fields a task needs is :func:`task_problems`, since the task is the deployment's, not the job's.

Pydantic and the standard library only: the worker image copies this file beside shared/hub_rules.py.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_PROMPT_CHARS = 2000
MAX_SEED = 2**32 - 1
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_SIDE = 4096
MAX_IMAGE_URL_CHARS = 2048
# Base64 of MAX_IMAGE_BYTES (4 characters per 3 bytes) plus a data-URL prefix.
MAX_IMAGE_CHARS = (MAX_IMAGE_BYTES + 2) // 3 * 4 + 256

Task = Literal["text_to_image", "image_to_image", "inpainting"]
TASKS: tuple[Task, ...] = get_args(Task)
OutputFormat = Literal["png", "jpeg", "webp"]
Size = Annotated[int, Field(ge=64, le=2048, multiple_of=8)]
ImageKind = Literal["data_url", "base64", "url"]

_DATA_URL = re.compile(r"^data:(?P<type>image/[A-Za-z0-9.+-]+)(?:;[A-Za-z0-9=.+-]+)*;base64,", re.ASCII)
_BASE64 = re.compile(r"^[A-Za-z0-9+/\s]*={0,2}\s*$", re.ASCII)


def image_kind(value: str) -> ImageKind:
    """What form an image reference has.

    Raises:
        ValueError: none of the accepted forms (a non-https URL, another data URL type, text that is not base64).
    """
    if value.startswith("data:"):
        if not _DATA_URL.match(value):
            raise ValueError("must be a data:image/...;base64, URL, base64 text or an https URL")
        return "data_url"
    if "://" in value[:16]:
        if not value.lower().startswith("https://"):
            raise ValueError("an image URL must use https")
        if len(value) > MAX_IMAGE_URL_CHARS:
            raise ValueError(f"an image URL must be at most {MAX_IMAGE_URL_CHARS} characters")
        return "url"
    if not value.strip() or not _BASE64.fullmatch(value):
        raise ValueError("must be a data:image/...;base64, URL, base64 text or an https URL")
    return "base64"


def base64_payload(value: str) -> str:
    """The base64 text of a data URL or of bare base64 (whitespace removed)."""
    payload = value.split(",", 1)[1] if value.startswith("data:") else value
    return "".join(payload.split())


def _check_image(value: str | None) -> str | None:
    if value is None:
        return None
    kind = image_kind(value)
    if kind != "url" and len(base64_payload(value)) * 3 // 4 > MAX_IMAGE_BYTES:
        raise ValueError(f"the image must be at most {MAX_IMAGE_BYTES // (1024 * 1024)} MB")
    return value


class GenerateInput(BaseModel):
    """A generation request. Fields left out take the model's defaults (the worker's ``Defaults``)."""

    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=False)

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    num_inference_steps: int | None = Field(default=None, ge=1, le=100)
    guidance_scale: float | None = Field(default=None, ge=0, le=30)
    width: Size | None = None
    height: Size | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description="random when left out; returned per image")
    num_images: int = Field(default=1, ge=1, le=4)
    output_format: OutputFormat = "png"
    image: str | None = Field(
        default=None,
        max_length=MAX_IMAGE_CHARS,
        description="image_to_image and inpainting: the input image (data URL, base64 or https URL)",
    )
    mask_image: str | None = Field(
        default=None,
        max_length=MAX_IMAGE_CHARS,
        description="inpainting: white where the image is repainted, black where it is kept",
    )
    strength: float | None = Field(
        default=None, ge=0, le=1, description="how far from the input image (image tasks); default the pipeline's"
    )

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("image", "mask_image")
    @classmethod
    def _image_reference(cls, value: str | None) -> str | None:
        return _check_image(value)

    @model_validator(mode="after")
    def _mask_needs_image(self) -> GenerateInput:
        if self.mask_image is not None and self.image is None:
            raise ValueError("mask_image needs an image")
        return self


def task_problems(request: GenerateInput, task: Task) -> list[str]:
    """``field: reason`` for each field the deployment's task needs and lacks, or does not take."""
    problems: list[str] = []
    if task == "text_to_image":
        problems += [
            f"{name}: not taken by a text_to_image deployment"
            for name in ("image", "mask_image", "strength")
            if getattr(request, name) is not None
        ]
        return problems
    if request.image is None:
        problems.append(f"image: required by an {task} deployment")
    if task == "inpainting" and request.mask_image is None:
        problems.append("mask_image: required by an inpainting deployment")
    if task == "image_to_image" and request.mask_image is not None:
        problems.append("mask_image: not taken by an image_to_image deployment (deploy with task inpainting)")
    return problems

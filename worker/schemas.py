"""Job input and output of the worker (docs/contracts.md "Jobs"; issue 4).

Inputs are validated strictly: unknown fields, out-of-range values, sizes that are not multiples of 8, values of
the wrong JSON type (``true``, ``"4"`` or ``1.0`` for an integer) and blank prompts are errors that fail the job,
never silently corrected (a clamped or coerced request would return an image the caller did not ask for). Seeds
are 0..2**32-1, so every JavaScript client holds them exactly (and so does a CPU ``torch.Generator``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

MAX_PROMPT_CHARS = 2000
MAX_SEED = 2**32 - 1

OutputFormat = Literal["png", "jpeg", "webp"]
Size = Annotated[int, Field(ge=64, le=2048, multiple_of=8)]


class WarmupInput(BaseModel):
    """The warm-up job provisioning submits: ``{"warmup": true}``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    warmup: StrictBool

    @field_validator("warmup")
    @classmethod
    def _is_true(cls, value: bool) -> bool:
        # Not Literal[True]: a literal matches by equality, so it would take 1 for true.
        if not value:
            raise ValueError("must be true")
        return value


class GenerateInput(BaseModel):
    """A text-to-image request. Fields left out take the model's defaults (see :class:`worker.pipeline.Defaults`)."""

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

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class S3Config(BaseModel):
    """Runpod's per-job output bucket (the ``s3Config`` of a ``/run`` request)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    access_id: str = Field(alias="accessId")
    access_secret: str = Field(alias="accessSecret")
    bucket_name: str = Field(alias="bucketName")
    endpoint_url: str = Field(alias="endpointUrl")


class Parameters(BaseModel):
    """The parameters a generation actually ran with (defaults resolved)."""

    prompt: str
    negative_prompt: str | None
    num_inference_steps: int
    guidance_scale: float
    width: int
    height: int
    num_images: int
    output_format: OutputFormat


class ImageOut(BaseModel):
    """One image: inline base64 or a presigned URL, and the seed that reproduces it."""

    image: str | None = None
    url: str | None = None
    seed: int


class Timings(BaseModel):
    """Seconds spent in the pipeline call."""

    inference_s: float


class GenerateOutput(BaseModel):
    """The output of a completed generation job."""

    images: list[ImageOut]
    timings: Timings
    model: str
    parameters: Parameters


def describe_validation_error(error: ValidationError) -> str:
    """One line naming every bad field, e.g. ``invalid input: width: Input should be a multiple of 8``."""
    problems = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "input"
        problems.append(f"{where}: {item['msg']}")
    return "invalid input: " + "; ".join(problems)

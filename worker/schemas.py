"""Job input and output of the worker (docs/contracts.md "Jobs"; issues 4 and 13).

The generation input is :class:`shared.job_input.GenerateInput`, the model the API validates with too. Inputs are
validated strictly: unknown fields, out-of-range values, sizes that are not multiples of 8, values of
the wrong JSON type (``true``, ``"4"`` or ``1.0`` for an integer) and blank prompts are errors that fail the job,
never silently corrected (a clamped or coerced request would return an image the caller did not ask for). Seeds
are 0..2**32-1, so every JavaScript client holds them exactly (and so does a CPU ``torch.Generator``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from shared.job_input import MAX_PROMPT_CHARS, MAX_SEED, GenerateInput, OutputFormat, Size

__all__ = ["MAX_PROMPT_CHARS", "MAX_SEED", "GenerateInput", "OutputFormat", "Size"]


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
    strength: float | None = None


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

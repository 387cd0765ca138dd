"""Start-up failures, each with the reason code the callback function records (docs/contracts.md)."""

from __future__ import annotations

from typing import Literal

Reason = Literal[
    "out_of_memory",
    "model_load_failed",
    "model_not_found",
    "model_gated",
    "hf_token_invalid",
    "image_pull_failed",
    "internal",
]


class WorkerError(Exception):
    """A failure the worker reports as phase ``failed`` with ``reason`` before exiting non-zero."""

    reason: Reason = "internal"

    def __init__(self, message: str, reason: Reason | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ModelNotFoundError(WorkerError):
    """The repo or the pinned revision does not exist, or the token may not see it."""

    reason: Reason = "model_not_found"


class ModelGatedError(WorkerError):
    """The repo is gated and the token has not been granted access."""

    reason: Reason = "model_gated"


class HfTokenInvalidError(WorkerError):
    """The Hub refused the token itself (unknown or expired), as provisioning's check reports it."""

    reason: Reason = "hf_token_invalid"


class ModelLoadError(WorkerError):
    """The weights are unusable: a hash or size mismatch, a missing file, or a pipeline that does not load."""

    reason: Reason = "model_load_failed"


class CacheIntegrityError(ModelLoadError):
    """A cached file's size or sha256 differs from its manifest."""


class CacheGrantRefusedError(WorkerError):
    """The callback function refused (or could not answer) the shared-cache grant: the worker uses the Hub."""

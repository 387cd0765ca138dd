"""Start-up failures, each with the reason code the callback function records (docs/contracts.md): the
platform's own :class:`shared.lifecycle.FailureReason`, one a worker may give (``WORKER_FAILURE_REASONS``)."""

from __future__ import annotations

from shared.lifecycle import FailureReason


class WorkerError(Exception):
    """A failure the worker reports as phase ``failed`` with ``reason`` before exiting non-zero."""

    reason: FailureReason = FailureReason.INTERNAL

    def __init__(self, message: str, reason: FailureReason | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ModelNotFoundError(WorkerError):
    """The repo or the pinned revision does not exist, or the token may not see it."""

    reason: FailureReason = FailureReason.MODEL_NOT_FOUND


class ModelGatedError(WorkerError):
    """The repo is gated and the token has not been granted access."""

    reason: FailureReason = FailureReason.MODEL_GATED


class HfTokenInvalidError(WorkerError):
    """The Hub refused the token itself (unknown or expired), as provisioning's check reports it."""

    reason: FailureReason = FailureReason.HF_TOKEN_INVALID


class ModelLoadError(WorkerError):
    """The weights are unusable: a hash or size mismatch, a missing file, or a pipeline that does not load."""

    reason: FailureReason = FailureReason.MODEL_LOAD_FAILED


class CacheIntegrityError(ModelLoadError):
    """A cached file's size or sha256 differs from its manifest."""


class CacheGrantRefusedError(WorkerError):
    """The callback function refused (or could not answer) the shared-cache grant: the worker uses the Hub."""

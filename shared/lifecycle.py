"""The deployment lifecycle as pure code: statuses, failure reasons and the allowed transitions.

``validating → selecting_gpu → creating_endpoint → downloading_model → loading_model → ready``; the worker
phases (downloading, loading, ready) may skip forward when a report is lost, never back. ``ready ⇄ stopped``
(a start goes back through the warm-up). Any non-terminal status may fail; any status but ``deleted`` may be
deleted. ``failed`` only moves on to ``deleting``; ``deleted`` is final.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    VALIDATING = "validating"
    SELECTING_GPU = "selecting_gpu"
    CREATING_ENDPOINT = "creating_endpoint"
    DOWNLOADING_MODEL = "downloading_model"
    LOADING_MODEL = "loading_model"
    READY = "ready"
    STOPPED = "stopped"
    FAILED = "failed"
    DELETING = "deleting"
    DELETED = "deleted"


class FailureReason(StrEnum):
    MODEL_NOT_FOUND = "model_not_found"
    MODEL_GATED = "model_gated"
    HF_TOKEN_INVALID = "hf_token_invalid"
    UNSUPPORTED_MODEL = "unsupported_model"
    AUTH_FAILED = "auth_failed"
    NO_CAPACITY = "no_capacity"
    NO_GPU_FITS = "no_gpu_fits"
    QUOTA_EXCEEDED = "quota_exceeded"
    RUNPOD_RESOURCE_MISSING = "runpod_resource_missing"
    IMAGE_PULL_FAILED = "image_pull_failed"
    OUT_OF_MEMORY = "out_of_memory"
    MODEL_LOAD_FAILED = "model_load_failed"
    TIMEOUT = "timeout"
    INTERNAL = "internal"


WORKER_PHASES = (Status.DOWNLOADING_MODEL, Status.LOADING_MODEL, Status.READY)
# The reasons a worker's ``failed`` report may give (worker/errors.py raises them); the callback function counts
# any other as a failed load.
WORKER_FAILURE_REASONS = frozenset(
    {
        FailureReason.OUT_OF_MEMORY,
        FailureReason.MODEL_LOAD_FAILED,
        FailureReason.IMAGE_PULL_FAILED,
        FailureReason.MODEL_NOT_FOUND,
        FailureReason.MODEL_GATED,
        FailureReason.HF_TOKEN_INVALID,
        FailureReason.UNSUPPORTED_MODEL,
        FailureReason.TIMEOUT,
        FailureReason.INTERNAL,
    }
)
TERMINAL = frozenset({Status.FAILED, Status.DELETED})
# Statuses in which provisioning is still under way (the readiness watchdog and the sweep care about these).
PROVISIONING = frozenset(
    {Status.VALIDATING, Status.SELECTING_GPU, Status.CREATING_ENDPOINT, Status.DOWNLOADING_MODEL, Status.LOADING_MODEL}
)

_FORWARD: dict[Status, frozenset[Status]] = {
    Status.VALIDATING: frozenset({Status.SELECTING_GPU}),
    Status.SELECTING_GPU: frozenset({Status.CREATING_ENDPOINT}),
    Status.CREATING_ENDPOINT: frozenset(WORKER_PHASES),
    Status.DOWNLOADING_MODEL: frozenset({Status.LOADING_MODEL, Status.READY}),
    Status.LOADING_MODEL: frozenset({Status.READY}),
    Status.READY: frozenset({Status.STOPPED}),
    Status.STOPPED: frozenset({Status.DOWNLOADING_MODEL}),
    Status.FAILED: frozenset(),
    Status.DELETING: frozenset({Status.DELETED}),
    Status.DELETED: frozenset(),
}


def allowed_targets(current: Status) -> frozenset[Status]:
    """Every status a deployment in ``current`` may move to."""
    targets = set(_FORWARD[current])
    if current not in TERMINAL and current is not Status.DELETING:
        targets.add(Status.FAILED)
    if current is not Status.DELETED and current is not Status.DELETING:
        targets.add(Status.DELETING)
    return frozenset(targets)


def can_transition(current: Status, requested: Status) -> bool:
    """Whether the state machine allows ``current → requested`` (a repeat of the same status is not a move)."""
    return requested in allowed_targets(current)

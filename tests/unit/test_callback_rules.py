"""The callback's rules: which reason a worker's failure counts as, and when a shared-cache grant is refused."""

from __future__ import annotations

import pytest

from shared.callback.steps import CacheGrantRequest, _grant_refusal, worker_failure_reason
from shared.document import Deployment
from shared.lifecycle import FailureReason, Status
from shared.models import CacheScope
from tests.unit.factories import COMMIT, deployment

WORKER_REASONS = [
    "out_of_memory",
    "model_load_failed",
    "image_pull_failed",
    "model_not_found",
    "model_gated",
    "hf_token_invalid",
    "unsupported_model",
    "timeout",
    "internal",
]
PLATFORM_REASONS = ["no_capacity", "no_gpu_fits", "auth_failed", "quota_exceeded", "runpod_resource_missing"]


@pytest.mark.parametrize("reason", WORKER_REASONS)
def test_a_reason_a_worker_may_give_is_kept(reason: str) -> None:
    assert worker_failure_reason(reason) is FailureReason(reason)


@pytest.mark.parametrize("reason", PLATFORM_REASONS)
def test_a_reason_only_the_platform_gives_counts_as_a_failed_load(reason: str) -> None:
    assert worker_failure_reason(reason) is FailureReason.MODEL_LOAD_FAILED


@pytest.mark.parametrize("reported", ["garbage", "OUT_OF_MEMORY", " out_of_memory", "", None])
def test_an_unknown_reason_counts_as_a_failed_load(reported: str | None) -> None:
    assert worker_failure_reason(reported) is FailureReason.MODEL_LOAD_FAILED


def test_every_failure_reason_is_either_a_worker_or_a_platform_one() -> None:
    assert sorted(WORKER_REASONS + PLATFORM_REASONS) == sorted(r.value for r in FailureReason)


# --- _grant_refusal -----------------------------------------------------------------------------------------------


def _granted(**fields: object) -> Deployment:
    values: dict[str, object] = {"cache_scope": CacheScope.SHARED, "shared_cache_granted": True}
    return deployment(**(values | fields))


def _asked(doc: Deployment, **fields: str) -> CacheGrantRequest:
    values = {"deployment_id": doc.deployment_id, "model_id": doc.hf_model_id, "revision": COMMIT}
    return CacheGrantRequest.model_validate(values | fields)


@pytest.mark.parametrize(
    "status", [Status.CREATING_ENDPOINT, Status.DOWNLOADING_MODEL, Status.LOADING_MODEL, Status.READY]
)
def test_a_granted_deployment_whose_worker_may_be_starting_gets_its_model(status: Status) -> None:
    doc = _granted(status=status)

    assert _grant_refusal(doc, _asked(doc)) is None


@pytest.mark.parametrize(
    ("scope", "granted"),
    [
        (CacheScope.SHARED, False),
        (CacheScope.SHARED, None),  # the model check never decided
        (CacheScope.PRIVATE, True),
        (CacheScope.OFF, True),
    ],
)
def test_a_deployment_not_granted_the_shared_cache_is_refused(scope: CacheScope, granted: bool | None) -> None:
    doc = deployment(cache_scope=scope, shared_cache_granted=granted)

    assert _grant_refusal(doc, _asked(doc)) == "the deployment was not granted the shared cache"


@pytest.mark.parametrize(
    "status",
    [Status.VALIDATING, Status.SELECTING_GPU, Status.STOPPED, Status.FAILED, Status.DELETING, Status.DELETED],
)
def test_no_grant_where_no_worker_may_start(status: Status) -> None:
    doc = _granted(status=status)

    assert _grant_refusal(doc, _asked(doc)) == f"no worker may start in status {status.value}"


@pytest.mark.parametrize(
    "asked",
    [
        {"model_id": "org/other-model"},
        {"revision": "main"},  # the branch, not the commit the model check pinned
        {"revision": "b" * 40},
    ],
)
def test_a_request_for_another_model_or_revision_is_refused(asked: dict[str, str]) -> None:
    doc = _granted()

    refusal = _grant_refusal(doc, _asked(doc, **asked))

    assert refusal == "the request names another model or revision than the deployment's"

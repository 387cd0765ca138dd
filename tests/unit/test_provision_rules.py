"""Provisioning's rules: where a delivery starts from the document as it is, the first window of GPU pools, and
who may read the shared model cache."""

from __future__ import annotations

import pytest

from shared.deployments.provision import Stage, gpu_plan, next_stage, shared_cache_granted
from shared.errors import PermanentError
from shared.gpu import GpuTier, PoolRanking, SkippedPool
from shared.lifecycle import Status
from shared.models import CacheScope
from tests.unit.factories import T0, deployment, settings

# --- next_stage ---------------------------------------------------------------------------------------------------


def test_no_document_means_nothing_to_do() -> None:
    assert next_stage(None) is Stage.NOTHING


@pytest.mark.parametrize(
    ("status", "stage"),
    [
        (Status.VALIDATING, Stage.CHECK_MODEL),
        (Status.SELECTING_GPU, Stage.SELECT_GPUS),
        (Status.CREATING_ENDPOINT, Stage.CREATE_ENDPOINT),
        (Status.DOWNLOADING_MODEL, Stage.WATCH),
        (Status.LOADING_MODEL, Stage.WATCH),
        (Status.READY, Stage.NOTHING),
        (Status.STOPPED, Stage.NOTHING),
        (Status.DELETING, Stage.NOTHING),
        (Status.DELETED, Stage.NOTHING),
    ],
)
def test_each_status_starts_at_its_stage(status: Status, stage: Stage) -> None:
    doc = deployment(status=status, phase_timestamps={Status.VALIDATING: T0, Status.CREATING_ENDPOINT: T0})

    assert next_stage(doc) is stage


def test_a_failed_deployment_that_reached_runpod_and_was_not_torn_down_finishes_its_teardown() -> None:
    doc = deployment(status=Status.FAILED, phase_timestamps={Status.CREATING_ENDPOINT: T0, Status.FAILED: T0})

    assert next_stage(doc) is Stage.FINISH_TEARDOWN


def test_a_failed_deployment_already_torn_down_needs_nothing() -> None:
    doc = deployment(
        status=Status.FAILED,
        phase_timestamps={Status.CREATING_ENDPOINT: T0, Status.FAILED: T0},
        runpod={"endpoint_id": "ep-1", "torn_down_at": T0},
    )

    assert next_stage(doc) is Stage.NOTHING


def test_a_deployment_that_failed_before_creating_anything_on_runpod_needs_nothing() -> None:
    doc = deployment(status=Status.FAILED, phase_timestamps={Status.SELECTING_GPU: T0, Status.FAILED: T0})

    assert next_stage(doc) is Stage.NOTHING


# --- gpu_plan -----------------------------------------------------------------------------------------------------


def test_the_first_window_is_the_cheapest_pools_up_to_its_size() -> None:
    ranking = PoolRanking(("A", "B", "C", "D", "E"), (SkippedPool("S", "too small"),))

    assert gpu_plan(ranking, deployment(), window_size=3) == ["A", "B", "C"]
    assert gpu_plan(ranking, deployment(), window_size=1) == ["A"]
    assert gpu_plan(PoolRanking(("A",), ()), deployment(), window_size=3) == ["A"]


def test_no_fitting_pool_fails_no_gpu_fits_naming_the_tier_and_the_vram() -> None:
    doc = deployment(gpu_tier=GpuTier.PERFORMANCE, vram_estimate_gb=100.0)

    with pytest.raises(PermanentError) as caught:
        gpu_plan(PoolRanking((), (SkippedPool("AMPERE_80", "80 GB of VRAM, 100.0 GB needed"),)), doc, 3)

    assert caught.value.reason == "no_gpu_fits"
    assert "at tier performance or above" in caught.value.message
    assert "100.0 GB" in caught.value.message


def test_without_a_tier_the_message_names_only_the_vram() -> None:
    with pytest.raises(PermanentError) as caught:
        gpu_plan(PoolRanking((), ()), deployment(vram_estimate_gb=300.0), 3)

    assert caught.value.reason == "no_gpu_fits"
    assert "tier" not in caught.value.message
    assert "300.0 GB" in caught.value.message


# --- shared_cache_granted -----------------------------------------------------------------------------------------

CACHE = "s3://visgate-cache/models"


@pytest.mark.parametrize("scope", [CacheScope.OFF, CacheScope.PRIVATE])
def test_only_the_shared_scope_is_granted_or_refused(scope: CacheScope) -> None:
    config = settings(model_cache_s3_url=CACHE, model_cache_shared_allowlist="org/model")

    assert shared_cache_granted(config, deployment(cache_scope=scope)) is None


@pytest.mark.parametrize(
    ("cache_url", "allowlist", "granted"),
    [
        (CACHE, "org/model", True),
        (CACHE, " other/model , org/model ,", True),  # spaces and an empty item
        (CACHE, "other/model", False),
        (CACHE, "org/model-xl", False),  # a whole id, not a prefix
        (CACHE, "", False),
        (None, "org/model", False),  # no cache configured
    ],
)
def test_a_shared_deployment_is_granted_an_allowlisted_model_when_a_cache_exists(
    cache_url: str | None, allowlist: str, granted: bool
) -> None:
    config = settings(model_cache_s3_url=cache_url, model_cache_shared_allowlist=allowlist)

    assert shared_cache_granted(config, deployment(cache_scope=CacheScope.SHARED)) is granted

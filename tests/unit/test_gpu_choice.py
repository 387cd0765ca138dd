"""GPU pools: enough VRAM, cheapest first, tier as a floor, no-availability pools last, every left-out pool with its
reason; Runpod's catalog folded into pools; the catalog cache and its static fallback."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from shared.errors import RetryableError
from shared.gpu import (
    STATIC_POOLS,
    GpuCatalog,
    GpuPool,
    GpuTier,
    SkippedPool,
    pool_of_gpu_type,
    pools_from_catalog,
    rank_pools,
    tier_of,
)
from shared.runpod.client import CatalogGpu
from shared.runpod.errors import RunpodAuthError, RunpodUnavailableError


def _gpu(
    gpu_id: str, pool: str | None, memory: int, per_hour: float | None = None, availability: str | None = None
) -> CatalogGpu:
    """One GPU type as ``GET /v2/catalog/gpus`` answers it."""
    answer: dict[str, Any] = {"id": gpu_id, "name": gpu_id, "pool": pool, "memory": memory, "manufacturer": "NVIDIA"}
    answer["price"] = {"secure": 1.0, "community": 0.5} | ({"serverless": per_hour} if per_hour is not None else {})
    if availability is not None:
        answer["availability"] = availability
    return CatalogGpu.model_validate(answer)


def _pool(pool_id: str, vram_gb: int, usd_per_second: float, available: bool | None = None) -> GpuPool:
    return GpuPool(pool_id, vram_gb, usd_per_second, (f"{pool_id} card",), available)


# --- ranking ------------------------------------------------------------------------------------------------------


def test_fitting_pools_rank_cheapest_first() -> None:
    ranking = rank_pools(STATIC_POOLS, 20, None)

    assert ranking.ranked == ("AMPERE_24", "ADA_24", "AMPERE_48", "ADA_48_PRO", "AMPERE_80", "ADA_80_PRO", "HOPPER_141")
    assert ranking.skipped == (SkippedPool("AMPERE_16", "16 GB of VRAM, 20 GB needed"),)


def test_a_pool_exactly_as_large_as_needed_fits() -> None:
    assert "AMPERE_24" in rank_pools(STATIC_POOLS, 24, None).ranked
    assert "AMPERE_24" not in rank_pools(STATIC_POOLS, 24.5, None).ranked


def test_too_large_a_model_ranks_nothing_and_skips_every_pool_with_its_vram() -> None:
    assert rank_pools(STATIC_POOLS, 100, None).ranked == ("HOPPER_141",)

    nothing = rank_pools(STATIC_POOLS, 200, None)

    assert nothing.ranked == ()
    assert {s.pool for s in nothing.skipped} == {p.id for p in STATIC_POOLS}
    assert SkippedPool("HOPPER_141", "141 GB of VRAM, 200 GB needed") in nothing.skipped


def test_the_tier_is_a_floor_and_pools_below_it_are_skipped_with_their_class() -> None:
    ranking = rank_pools(STATIC_POOLS, 2, GpuTier.PERFORMANCE)

    assert ranking.ranked == ("AMPERE_80", "ADA_80_PRO", "HOPPER_141")
    assert SkippedPool("AMPERE_24", "economy class, below the requested performance") in ranking.skipped
    assert SkippedPool("ADA_48_PRO", "standard class, below the requested performance") in ranking.skipped
    assert len(ranking.skipped) == 5
    assert rank_pools(STATIC_POOLS, 2, GpuTier.ECONOMY) == rank_pools(STATIC_POOLS, 2, None)


def test_a_pool_too_small_and_below_the_tier_is_skipped_for_its_vram() -> None:
    ranking = rank_pools(STATIC_POOLS, 30, GpuTier.FLAGSHIP)

    assert ranking.ranked == ("HOPPER_141",)
    assert SkippedPool("AMPERE_24", "24 GB of VRAM, 30 GB needed") in ranking.skipped
    assert SkippedPool("AMPERE_80", "performance class, below the requested flagship") in ranking.skipped


def test_pools_without_availability_rank_last_and_are_recorded() -> None:
    pools = [
        _pool("CHEAP_NONE", 24, 0.0001, available=False),
        _pool("MID_UNKNOWN", 24, 0.0002, available=None),
        _pool("DEAR_HIGH", 48, 0.0003, available=True),
        _pool("DEARER_NONE", 48, 0.0004, available=False),
        _pool("SMALL", 16, 0.00005, available=True),
    ]

    ranking = rank_pools(pools, 20, None)

    assert ranking.ranked == ("MID_UNKNOWN", "DEAR_HIGH", "CHEAP_NONE", "DEARER_NONE")
    assert ranking.skipped == (
        SkippedPool("SMALL", "16 GB of VRAM, 20 GB needed"),
        SkippedPool("CHEAP_NONE", "no availability now: tried last"),
        SkippedPool("DEARER_NONE", "no availability now: tried last"),
    )


def test_equal_prices_rank_the_smaller_pool_first() -> None:
    ranking = rank_pools([_pool("BIG", 48, 0.0002), _pool("SMALL", 24, 0.0002)], 10, None)

    assert ranking.ranked == ("SMALL", "BIG")


@pytest.mark.parametrize(
    ("vram_gb", "tier"),
    [
        (16, GpuTier.ECONOMY),
        (24, GpuTier.ECONOMY),
        (25, GpuTier.STANDARD),
        (48, GpuTier.STANDARD),
        (80, GpuTier.PERFORMANCE),
        (81, GpuTier.FLAGSHIP),
        (141, GpuTier.FLAGSHIP),
    ],
)
def test_a_pools_class_follows_its_vram(vram_gb: int, tier: GpuTier) -> None:
    assert tier_of(vram_gb) is tier


# --- the catalog folded into pools --------------------------------------------------------------------------------


def test_a_pools_vram_is_its_smallest_members_and_its_price_is_per_second() -> None:
    pools = pools_from_catalog(
        [
            _gpu("NVIDIA RTX A4500", "AMPERE_16", 20, per_hour=0.576, availability="HIGH"),
            _gpu("NVIDIA RTX A4000", "AMPERE_16", 16, per_hour=0.576, availability="NONE"),
            _gpu("NVIDIA H200", "HOPPER_141", 141, per_hour=5.58, availability="LOW"),
        ]
    )

    assert [(p.id, p.vram_gb, p.available) for p in pools] == [("AMPERE_16", 16, True), ("HOPPER_141", 141, True)]
    assert pools[0].usd_per_second == pytest.approx(0.00016)
    assert pools[1].usd_per_second == pytest.approx(0.00155)
    assert pools[0].gpu_type_ids == ("NVIDIA RTX A4500", "NVIDIA RTX A4000")


def test_members_at_different_prices_count_at_the_dearest() -> None:
    (pool,) = pools_from_catalog([_gpu("a", "P", 24, per_hour=0.36), _gpu("b", "P", 24, per_hour=0.72)])

    assert pool.usd_per_second == pytest.approx(0.72 / 3600)


def test_availability_is_none_only_when_every_member_has_none_and_unknown_when_unreported() -> None:
    pools = {
        p.id: p.available
        for p in pools_from_catalog(
            [
                _gpu("a", "ALL_NONE", 24, 0.5, "NONE"),
                _gpu("b", "ALL_NONE", 24, 0.5, "NONE"),
                _gpu("c", "ONE_LOW", 24, 0.5, "NONE"),
                _gpu("d", "ONE_LOW", 24, 0.5, "LOW"),
                _gpu("e", "UNREPORTED", 24, 0.5),
            ]
        )
    }

    assert pools == {"ALL_NONE": False, "ONE_LOW": True, "UNREPORTED": None}


def test_types_outside_serverless_pools_drop_out() -> None:
    assert pools_from_catalog([_gpu("NVIDIA GeForce RTX 3070", None, 8, availability="HIGH")]) == ()


def test_a_pool_without_a_serverless_price_takes_the_static_one_or_drops_out(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="shared.gpu")

    pools = pools_from_catalog([_gpu("NVIDIA L4", "AMPERE_24", 24), _gpu("new card", "BLACKWELL_NEW", 180)])

    assert [(p.id, p.usd_per_second) for p in pools] == [("AMPERE_24", 0.00019)]
    assert "BLACKWELL_NEW" in caplog.text


# --- which pool a worker ran on -----------------------------------------------------------------------------------


def test_a_gpu_type_maps_to_its_pool() -> None:
    assert pool_of_gpu_type("NVIDIA L4") == "AMPERE_24"
    assert pool_of_gpu_type("NVIDIA H200") == "HOPPER_141"
    assert pool_of_gpu_type("a card nobody sells") is None
    assert pool_of_gpu_type(None) is None
    assert pool_of_gpu_type("X card", [_pool("X", 24, 0.1)]) == "X"


# --- the cache and its fallback -----------------------------------------------------------------------------------


class _Catalog:
    """What ``client.gpu_catalog`` would answer, counting the calls."""

    def __init__(self, *answers: list[CatalogGpu] | Exception) -> None:
        self._answers = list(answers)
        self.calls = 0

    def __call__(self) -> list[CatalogGpu]:
        self.calls += 1
        answer = self._answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


L4 = [_gpu("NVIDIA L4", "AMPERE_24", 24, per_hour=0.684, availability="HIGH")]
H200 = [_gpu("NVIDIA H200", "HOPPER_141", 141, per_hour=5.58, availability="HIGH")]


def test_the_catalog_is_cached_for_its_lifetime_then_read_again() -> None:
    now = [0.0]
    catalog = GpuCatalog(cache_s=60, clock=lambda: now[0])
    fetch = _Catalog(L4, H200)

    assert [p.id for p in catalog.pools(fetch)] == ["AMPERE_24"]
    now[0] = 59
    assert [p.id for p in catalog.pools(fetch)] == ["AMPERE_24"]
    assert fetch.calls == 1
    now[0] = 61
    assert [p.id for p in catalog.pools(fetch)] == ["HOPPER_141"]
    assert fetch.calls == 2


def test_an_unavailable_catalog_falls_back_to_the_last_answer_else_the_static_table() -> None:
    now = [0.0]
    catalog = GpuCatalog(cache_s=60, clock=lambda: now[0])
    fetch = _Catalog(RunpodUnavailableError("503"), L4, RetryableError("timeout"), H200)

    assert catalog.pools(fetch) == STATIC_POOLS  # nothing read yet
    assert [p.id for p in catalog.pools(fetch)] == ["AMPERE_24"]  # a failure is not cached: asked again
    now[0] = 120
    assert [p.id for p in catalog.pools(fetch)] == ["AMPERE_24"]  # stale beats static
    assert [p.id for p in catalog.pools(fetch)] == ["HOPPER_141"]  # and the next call asks again
    assert fetch.calls == 4


def test_an_empty_catalog_means_the_static_table() -> None:
    assert GpuCatalog(cache_s=60).pools(_Catalog([])) == STATIC_POOLS


def test_a_refused_key_is_not_hidden_by_the_fallback() -> None:
    catalog = GpuCatalog(cache_s=0)
    catalog.pools(_Catalog(L4))

    with pytest.raises(RunpodAuthError):
        catalog.pools(_Catalog(RunpodAuthError()))

"""GPU candidates: enough VRAM, cheapest first, tier as a floor; the catalog cache and its static fallback."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from shared.errors import RetryableError
from shared.gpu import STATIC_POOLS, GpuCatalog, GpuTier, pools_from_catalog, rank_pools
from shared.runpod.errors import RunpodAuthError


@dataclass
class FakeGpuType:
    id: str
    memory_in_gb: int


def test_ranks_fitting_pools_cheapest_first() -> None:
    assert rank_pools(STATIC_POOLS, 20, None)[:3] == ["AMPERE_24", "ADA_24", "AMPERE_48"]
    assert rank_pools(STATIC_POOLS, 100, None) == ["HOPPER_141"]
    assert rank_pools(STATIC_POOLS, 200, None) == []


def test_tier_is_a_floor() -> None:
    assert rank_pools(STATIC_POOLS, 2, GpuTier.PERFORMANCE) == ["AMPERE_80", "ADA_80_PRO", "HOPPER_141"]
    assert rank_pools(STATIC_POOLS, 2, GpuTier.ECONOMY) == rank_pools(STATIC_POOLS, 2, None)


def test_catalog_vram_is_the_smallest_listed_member_and_unlisted_pools_drop_out() -> None:
    pools = pools_from_catalog([FakeGpuType("NVIDIA RTX A4500", 20), FakeGpuType("NVIDIA H200", 141)])

    assert [(p.id, p.vram_gb) for p in pools] == [("AMPERE_16", 20), ("HOPPER_141", 141)]


def test_catalog_is_cached_and_falls_back_to_the_static_table() -> None:
    now = [0.0]
    catalog = GpuCatalog(cache_s=60, clock=lambda: now[0])
    calls = []

    def fetch() -> list[FakeGpuType]:
        calls.append(1)
        return [FakeGpuType("NVIDIA L4", 24)]

    assert [p.id for p in catalog.pools(fetch)] == ["AMPERE_24"]
    assert [p.id for p in catalog.pools(fetch)] == ["AMPERE_24"]
    assert len(calls) == 1

    def failing() -> list[FakeGpuType]:
        raise RetryableError("503")

    fresh = GpuCatalog(cache_s=60)
    assert fresh.pools(failing) == STATIC_POOLS
    now[0] = 120
    assert [p.id for p in catalog.pools(failing)] == ["AMPERE_24"]  # stale beats static


def test_a_refused_key_is_not_hidden_by_the_fallback() -> None:
    def refused() -> list[FakeGpuType]:
        raise RunpodAuthError()

    with pytest.raises(RunpodAuthError):
        GpuCatalog(cache_s=60).pools(refused)

"""GPU tiers and Runpod Serverless GPU pools: the choice of pools for a VRAM estimate, as pure functions.

Runpod's catalog (``GET /v2/catalog/gpus?include=AVAILABILITY&product=SERVERLESS``) lists GPU types with their
serverless ``pool``, VRAM, the pool's price and current availability; :func:`pools_from_catalog` folds it into
pools. When Runpod's catalog cannot be read, the static table (Runpod's public serverless pricing, 2026) stands in,
without availability.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from shared.errors import RetryableError
from shared.runpod.client import Availability, CatalogGpu

logger = logging.getLogger(__name__)

SECONDS_PER_HOUR = 3600


class GpuTier(StrEnum):
    ECONOMY = "economy"
    STANDARD = "standard"
    PERFORMANCE = "performance"
    FLAGSHIP = "flagship"


_TIER_ORDER = (GpuTier.ECONOMY, GpuTier.STANDARD, GpuTier.PERFORMANCE, GpuTier.FLAGSHIP)
# A pool's class follows its VRAM (the pool ids Runpod names change; the memory they offer does not).
_TIER_CEILINGS_GB = ((24, GpuTier.ECONOMY), (48, GpuTier.STANDARD), (80, GpuTier.PERFORMANCE))


def tier_of(vram_gb: int) -> GpuTier:
    return next((tier for ceiling, tier in _TIER_CEILINGS_GB if vram_gb <= ceiling), GpuTier.FLAGSHIP)


@dataclass(frozen=True)
class GpuPool:
    id: str
    vram_gb: int
    usd_per_second: float
    gpu_type_ids: tuple[str, ...]
    available: bool | None = None  # None: unknown (the static table)

    @property
    def tier(self) -> GpuTier:
        return tier_of(self.vram_gb)


@dataclass(frozen=True)
class SkippedPool:
    pool: str
    reason: str


@dataclass(frozen=True)
class PoolRanking:
    """Pools to try in order (cheapest fitting first, those without availability last) and what was left out."""

    ranked: tuple[str, ...]
    skipped: tuple[SkippedPool, ...]


STATIC_POOLS: tuple[GpuPool, ...] = (
    GpuPool("AMPERE_16", 16, 0.00016, ("NVIDIA RTX A4000", "NVIDIA RTX A4500")),
    GpuPool("AMPERE_24", 24, 0.00019, ("NVIDIA RTX A5000", "NVIDIA L4", "NVIDIA GeForce RTX 3090")),
    GpuPool("ADA_24", 24, 0.00031, ("NVIDIA GeForce RTX 4090",)),
    GpuPool("AMPERE_48", 48, 0.00034, ("NVIDIA RTX A6000", "NVIDIA A40")),
    GpuPool("ADA_48_PRO", 48, 0.00053, ("NVIDIA L40", "NVIDIA L40S", "NVIDIA RTX 6000 Ada Generation")),
    GpuPool("AMPERE_80", 80, 0.00076, ("NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB")),
    GpuPool("ADA_80_PRO", 80, 0.00116, ("NVIDIA H100 PCIe", "NVIDIA H100 80GB HBM3")),
    GpuPool("HOPPER_141", 141, 0.00155, ("NVIDIA H200",)),
)
_STATIC_PRICE = {pool.id: pool.usd_per_second for pool in STATIC_POOLS}


def pools_from_catalog(gpus: Iterable[CatalogGpu]) -> tuple[GpuPool, ...]:
    """Runpod's GPU types folded into their serverless pools.

    A pool's VRAM is its smallest member's (Runpod may place a worker on any type of the pool); it is available
    when any member is; its price is the catalog's serverless rate (per GPU-hour), else the static table's.
    """
    members: dict[str, list[CatalogGpu]] = {}
    for gpu in gpus:
        if gpu.pool:
            members.setdefault(gpu.pool, []).append(gpu)
    pools = []
    for pool_id, types in sorted(members.items()):
        prices = [g.price.serverless for g in types if g.price.serverless is not None]
        price = max(prices) / SECONDS_PER_HOUR if prices else _STATIC_PRICE.get(pool_id)
        if price is None:
            logger.warning("pool %s has no serverless price: left out", pool_id)
            continue
        levels = [g.availability for g in types if g.availability is not None]
        pools.append(
            GpuPool(
                id=pool_id,
                vram_gb=min(g.memory for g in types),
                usd_per_second=price,
                gpu_type_ids=tuple(g.id for g in types),
                available=any(level is not Availability.NONE for level in levels) if levels else None,
            )
        )
    return tuple(pools)


def rank_pools(pools: Iterable[GpuPool], vram_gb: float, tier: GpuTier | None) -> PoolRanking:
    """Pools with enough VRAM (and of ``tier`` or above: a tier is a floor), cheapest first, those Runpod reports
    no availability for last; the others with the reason they were left out."""
    floor = _TIER_ORDER.index(tier) if tier else 0
    fitting: list[GpuPool] = []
    skipped: list[SkippedPool] = []
    for pool in sorted(pools, key=lambda p: (p.usd_per_second, p.vram_gb, p.id)):
        if pool.vram_gb < vram_gb:
            skipped.append(SkippedPool(pool.id, f"{pool.vram_gb} GB of VRAM, {vram_gb} GB needed"))
        elif _TIER_ORDER.index(pool.tier) < floor:
            skipped.append(SkippedPool(pool.id, f"{pool.tier.value} class, below the requested {tier}"))
        else:
            fitting.append(pool)
    ranked = [p for p in fitting if p.available is not False] + [p for p in fitting if p.available is False]
    skipped += [SkippedPool(p.id, "no availability now: tried last") for p in fitting if p.available is False]
    return PoolRanking(tuple(p.id for p in ranked), tuple(skipped))


def pool_of_gpu_type(gpu_type_id: str | None, pools: Iterable[GpuPool] = STATIC_POOLS) -> str | None:
    """The pool a GPU type belongs to (what the user sees as the pool a worker ran on)."""
    return next((p.id for p in pools if gpu_type_id in p.gpu_type_ids), None)


class GpuCatalog:
    """Runpod's GPU catalog as pools, cached briefly per instance; the static table if Runpod fails."""

    def __init__(self, cache_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._cache_s = cache_s
        self._clock = clock
        self._pools: tuple[GpuPool, ...] | None = None
        self._fetched_at = 0.0

    def pools(self, fetch: Callable[[], Iterable[CatalogGpu]]) -> tuple[GpuPool, ...]:
        """The pools, refreshed through ``fetch`` when the cache is stale.

        Only transient failures fall back (to the last answer, else the static table): an auth error propagates
        (that key cannot create anything either).
        """
        now = self._clock()
        if self._pools is not None and now - self._fetched_at < self._cache_s:
            return self._pools
        try:
            pools = pools_from_catalog(fetch())
        except RetryableError as exc:
            logger.warning(
                "the GPU catalog is unavailable, using the %s: %s",
                "last answer" if self._pools else "static GPU table",
                exc,
            )
            return self._pools or STATIC_POOLS
        self._pools, self._fetched_at = (pools or STATIC_POOLS), now
        return self._pools

"""GPU tiers and Runpod Serverless GPU pools: the static fallback catalog.

Pool ids are Runpod's serverless ``gpuIds`` values. Prices are per-second flex prices in USD (Runpod's public
serverless pricing, 2026); provisioning refreshes VRAM/availability from the ``gpuTypes`` catalog when it can.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from shared.errors import RetryableError

logger = logging.getLogger(__name__)


class GpuTier(StrEnum):
    ECONOMY = "economy"
    STANDARD = "standard"
    PERFORMANCE = "performance"
    FLAGSHIP = "flagship"


@dataclass(frozen=True)
class GpuPool:
    id: str
    vram_gb: int
    usd_per_second: float
    tier: GpuTier
    gpu_type_ids: tuple[str, ...]


STATIC_POOLS: tuple[GpuPool, ...] = (
    GpuPool("AMPERE_16", 16, 0.00016, GpuTier.ECONOMY, ("NVIDIA RTX A4000", "NVIDIA RTX A4500")),
    GpuPool("AMPERE_24", 24, 0.00019, GpuTier.ECONOMY, ("NVIDIA RTX A5000", "NVIDIA L4", "NVIDIA GeForce RTX 3090")),
    GpuPool("ADA_24", 24, 0.00031, GpuTier.ECONOMY, ("NVIDIA GeForce RTX 4090",)),
    GpuPool("AMPERE_48", 48, 0.00034, GpuTier.STANDARD, ("NVIDIA RTX A6000", "NVIDIA A40")),
    GpuPool(
        "ADA_48_PRO", 48, 0.00053, GpuTier.STANDARD, ("NVIDIA L40", "NVIDIA L40S", "NVIDIA RTX 6000 Ada Generation")
    ),
    GpuPool("AMPERE_80", 80, 0.00076, GpuTier.PERFORMANCE, ("NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB")),
    GpuPool("ADA_80_PRO", 80, 0.00116, GpuTier.PERFORMANCE, ("NVIDIA H100 PCIe", "NVIDIA H100 80GB HBM3")),
    GpuPool("HOPPER_141", 141, 0.00155, GpuTier.FLAGSHIP, ("NVIDIA H200",)),
)

_TIER_ORDER = (GpuTier.ECONOMY, GpuTier.STANDARD, GpuTier.PERFORMANCE, GpuTier.FLAGSHIP)


class GpuTypeInfo(Protocol):
    """What the catalog needs from one Runpod ``gpuTypes`` entry."""

    id: str
    memory_in_gb: int


def pools_from_catalog(gpu_types: Iterable[GpuTypeInfo]) -> tuple[GpuPool, ...]:
    """The static pools, with VRAM from Runpod's catalog; pools none of whose GPU types Runpod lists are left out.

    A pool's VRAM is its smallest member's: Runpod may place a worker on any GPU type of the pool.
    """
    memory = {gpu.id: gpu.memory_in_gb for gpu in gpu_types}
    pools = []
    for pool in STATIC_POOLS:
        listed = [memory[type_id] for type_id in pool.gpu_type_ids if type_id in memory]
        if listed:
            pools.append(replace(pool, vram_gb=min(listed)))
    return tuple(pools)


def rank_pools(pools: Iterable[GpuPool], vram_gb: float, tier: GpuTier | None) -> list[str]:
    """Pool ids with enough VRAM, cheapest first. A tier is a floor: pools of that class or above."""
    floor = _TIER_ORDER.index(tier) if tier else 0
    fitting = [p for p in pools if p.vram_gb >= vram_gb and _TIER_ORDER.index(p.tier) >= floor]
    return [p.id for p in sorted(fitting, key=lambda p: (p.usd_per_second, p.vram_gb, p.id))]


class GpuCatalog:
    """Runpod's ``gpuTypes`` joined with the static table, cached for minutes per instance (it changes rarely)."""

    def __init__(self, cache_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._cache_s = cache_s
        self._clock = clock
        self._pools: tuple[GpuPool, ...] | None = None
        self._fetched_at = 0.0

    def pools(self, fetch: Callable[[], Iterable[GpuTypeInfo]]) -> tuple[GpuPool, ...]:
        """The pools, refreshed through ``fetch`` when the cache is stale; the static table if Runpod fails.

        Only transient failures fall back: an auth error propagates (that key cannot create anything either).
        """
        now = self._clock()
        if self._pools is not None and now - self._fetched_at < self._cache_s:
            return self._pools
        try:
            pools = pools_from_catalog(fetch())
        except RetryableError as exc:
            logger.warning("gpuTypes unavailable, using the static GPU table: %s", exc)
            return self._pools or STATIC_POOLS
        self._pools, self._fetched_at = (pools or STATIC_POOLS), now
        return self._pools

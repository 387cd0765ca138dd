"""The simulator's fixed GPU catalog: Runpod Serverless GPU pools and the GPU types that belong to them.

As in REST v2: pool ids are what an endpoint's ``gpu.pools`` takes (in priority order), GPU type ids are what
``gpu.excludedTypes`` takes, and ``GET /v2/catalog/gpus`` lists the types, each with its ``pool`` (null for a type
that is in no serverless pool). GPU type ids and names are Runpod's. Prices approximate Runpod's public ones:
per-second flex (and active) prices for serverless pools, per-hour secure / community prices for pods. They only
need to be realistic enough for GPU choice to behave as it would against the real catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DATA_CENTER_ID = "SIM-LOCAL-1"
DATA_CENTER_NAME = "Simulator Local 1"
CUDA_VERSIONS = ("12.4", "12.6", "12.8")


@dataclass(frozen=True)
class ServerlessPool:
    """One serverless GPU pool (what ``gpuIds`` names)."""

    id: str
    display_name: str
    memory_in_gb: int
    flex_usd_per_second: float
    active_usd_per_second: float


@dataclass(frozen=True)
class GpuType:
    """One GPU type and the serverless pool it serves in (None: pods only)."""

    id: str
    display_name: str
    memory_in_gb: int
    pool_id: str | None
    secure_usd_per_hour: float
    community_usd_per_hour: float | None
    max_gpu_count: int = 8
    manufacturer: str = "NVIDIA"

    @property
    def community_cloud(self) -> bool:
        """Whether the community cloud offers this type."""
        return self.community_usd_per_hour is not None

    @property
    def lowest_usd_per_hour(self) -> float:
        """The cheapest on-demand price over both clouds."""
        if self.community_usd_per_hour is None:
            return self.secure_usd_per_hour
        return min(self.secure_usd_per_hour, self.community_usd_per_hour)

    @property
    def spot_usd_per_hour(self) -> float:
        """Spot (interruptible) bid floor; Runpod's spot prices sit around 60 % of on-demand."""
        return round(self.lowest_usd_per_hour * 0.6, 2)


SERVERLESS_POOLS: tuple[ServerlessPool, ...] = (
    ServerlessPool("AMPERE_16", "16 GB", 16, 0.00016, 0.00011),
    ServerlessPool("AMPERE_24", "24 GB", 24, 0.00019, 0.00013),
    ServerlessPool("ADA_24", "24 GB PRO", 24, 0.00031, 0.00021),
    ServerlessPool("AMPERE_48", "48 GB", 48, 0.00034, 0.00024),
    ServerlessPool("ADA_48_PRO", "48 GB PRO", 48, 0.00053, 0.00037),
    ServerlessPool("AMPERE_80", "80 GB", 80, 0.00076, 0.00060),
    ServerlessPool("ADA_80_PRO", "80 GB PRO", 80, 0.00116, 0.00093),
    ServerlessPool("HOPPER_141", "141 GB", 141, 0.00155, 0.00124),
)

GPU_TYPES: tuple[GpuType, ...] = (
    GpuType("NVIDIA RTX A4000", "RTX A4000", 16, "AMPERE_16", 0.25, 0.17),
    GpuType("NVIDIA RTX A4500", "RTX A4500", 20, "AMPERE_16", 0.25, 0.19),
    GpuType("NVIDIA RTX A5000", "RTX A5000", 24, "AMPERE_24", 0.27, 0.16),
    GpuType("NVIDIA L4", "L4", 24, "AMPERE_24", 0.43, None),
    GpuType("NVIDIA GeForce RTX 3090", "RTX 3090", 24, "AMPERE_24", 0.43, 0.22),
    GpuType("NVIDIA GeForce RTX 4090", "RTX 4090", 24, "ADA_24", 0.69, 0.34),
    GpuType("NVIDIA RTX A6000", "RTX A6000", 48, "AMPERE_48", 0.49, 0.33),
    GpuType("NVIDIA A40", "A40", 48, "AMPERE_48", 0.40, None),
    GpuType("NVIDIA L40", "L40", 48, "ADA_48_PRO", 0.99, None),
    GpuType("NVIDIA L40S", "L40S", 48, "ADA_48_PRO", 0.86, 0.79),
    GpuType("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada", 48, "ADA_48_PRO", 0.77, 0.74),
    GpuType("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, "AMPERE_80", 1.64, 1.19),
    GpuType("NVIDIA A100-SXM4-80GB", "A100 SXM", 80, "AMPERE_80", 1.74, 1.39),
    GpuType("NVIDIA H100 PCIe", "H100 PCIe", 80, "ADA_80_PRO", 2.39, 1.99),
    GpuType("NVIDIA H100 80GB HBM3", "H100 SXM", 80, "ADA_80_PRO", 2.69, 2.39),
    GpuType("NVIDIA H200", "H200 SXM", 141, "HOPPER_141", 3.99, 3.59),
    # In no serverless pool (pods only), as many of Runpod's types are: a client must skip a null ``pool``.
    GpuType("NVIDIA GeForce RTX 3070", "RTX 3070", 8, None, 0.20, 0.13),
)

POOLS_BY_ID: dict[str, ServerlessPool] = {pool.id: pool for pool in SERVERLESS_POOLS}
GPU_TYPES_BY_ID: dict[str, GpuType] = {gpu.id: gpu for gpu in GPU_TYPES}


def gpu_types_in_pool(pool_id: str) -> tuple[GpuType, ...]:
    """The GPU types a serverless pool draws from."""
    return tuple(gpu for gpu in GPU_TYPES if gpu.pool_id == pool_id)


def availability_level(free: int | None) -> str:
    """Runpod's ``AvailabilityLevel`` for this many free worker slots (None: unlimited)."""
    if free is None or free > 3:
        return "HIGH"
    if free <= 0:
        return "NONE"
    return "LOW" if free == 1 else "MEDIUM"


def gpu_type_view(gpu: GpuType, availability: str | None = None) -> dict[str, Any]:
    """The v2 ``GpuType`` object; ``availability`` given only for ``include=AVAILABILITY``."""
    pool = POOLS_BY_ID.get(gpu.pool_id or "")
    price: dict[str, Any] = {"secure": gpu.secure_usd_per_hour, "community": gpu.community_usd_per_hour or 0.0}
    if pool is not None:
        # Per GPU per hour, from the pool's per-second flex price.
        price["serverless"] = round(pool.flex_usd_per_second * 3600, 3)
    view: dict[str, Any] = {
        "id": gpu.id,
        "name": gpu.display_name,
        "pool": gpu.pool_id,
        "manufacturer": gpu.manufacturer,
        "memory": gpu.memory_in_gb,
        "secure": True,
        "community": gpu.community_cloud,
        "price": price,
        "maxCount": {"secure": gpu.max_gpu_count, "community": gpu.max_gpu_count if gpu.community_cloud else 0},
    }
    if availability is not None:
        view["availability"] = availability
        if availability != "NONE":
            view["dataCenters"] = [{"id": DATA_CENTER_ID, "name": DATA_CENTER_NAME, "availability": availability}]
        view["cudaVersions"] = [{"version": v, "available": availability != "NONE"} for v in CUDA_VERSIONS]
    return view

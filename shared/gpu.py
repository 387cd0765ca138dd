"""GPU tiers and Runpod Serverless GPU pools: the static fallback catalog.

Pool ids are Runpod's serverless ``gpuIds`` values. Prices are per-second flex prices in USD (Runpod's public
serverless pricing, 2026); provisioning refreshes VRAM/availability from the ``gpuTypes`` catalog when it can.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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
    GpuPool("ADA_48_PRO", 48, 0.00053, GpuTier.STANDARD, ("NVIDIA L40", "NVIDIA L40S", "NVIDIA RTX 6000 Ada Generation")),
    GpuPool("AMPERE_80", 80, 0.00076, GpuTier.PERFORMANCE, ("NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB")),
    GpuPool("ADA_80_PRO", 80, 0.00116, GpuTier.PERFORMANCE, ("NVIDIA H100 PCIe", "NVIDIA H100 80GB HBM3")),
    GpuPool("HOPPER_141", 141, 0.00155, GpuTier.FLAGSHIP, ("NVIDIA H200",)),
)

"""The API's small answers as typed records, with the API's field names: invoke keys, usage, GPU pools.

Each ``from_json`` reads the fields this client knows and ignores the others, so a newer server that adds a field
never breaks an older client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from typing import Any


@dataclass(frozen=True)
class InvokeKey:
    """A deployment's invoke key: ``key`` (``vdk_...``) is only in the answer that created it (the API keeps a hash).

    The key opens the run, runsync, jobs and get routes of its one deployment: ``Client(api_key=key.key)``.
    """

    key_id: str
    deployment_id: str
    prefix: str
    created_at: datetime
    key: str | None = field(default=None, repr=False)  # a secret: kept out of logs and tracebacks

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InvokeKey:
        return cls(
            key_id=str(data["key_id"]),
            deployment_id=str(data["deployment_id"]),
            prefix=str(data["prefix"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            key=data.get("key"),
        )


@dataclass(frozen=True)
class Usage:
    """What jobs used: counts, milliseconds and the estimated cost (execution time x the pool's serverless price;
    an estimate: Runpod's bill is the truth)."""

    requests: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    images: int = 0
    execution_ms: int = 0
    delay_ms: int = 0
    estimated_cost_usd: float = 0.0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Usage:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass(frozen=True)
class DeploymentUsage:
    deployment_id: str
    usage: Usage


@dataclass(frozen=True)
class UsageReport:
    """``GET /v1/usage``: your usage per deployment and in total over the UTC days ``from_day``..``to_day``."""

    from_day: date
    to_day: date
    deployments: tuple[DeploymentUsage, ...]
    total: Usage

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UsageReport:
        return cls(
            from_day=date.fromisoformat(data["from_day"]),
            to_day=date.fromisoformat(data["to_day"]),
            deployments=tuple(
                DeploymentUsage(str(row["deployment_id"]), Usage.from_json(row["usage"]))
                for row in data.get("deployments", [])
            ),
            total=Usage.from_json(data.get("total", {})),
        )


@dataclass(frozen=True)
class GpuPool:
    """A GPU pool a deployment can use (``GET /v1/gpus``); ``available`` is None when Runpod's catalog is unknown."""

    pool: str
    vram_gb: int
    tier: str
    usd_per_second: float
    usd_per_hour: float
    available: bool | None
    gpu_type_ids: tuple[str, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GpuPool:
        return cls(
            pool=str(data["pool"]),
            vram_gb=int(data["vram_gb"]),
            tier=str(data["tier"]),
            usd_per_second=float(data["usd_per_second"]),
            usd_per_hour=float(data["usd_per_hour"]),
            available=data.get("available"),
            gpu_type_ids=tuple(data.get("gpu_type_ids", [])),
        )

"""The stored deployment document: documents of the previous release still read, fields a newer release adds
survive a read-modify-write, Firestore gets plain values, and neither the document nor its public view holds a
secret."""

from __future__ import annotations

import types
import typing
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from pydantic import BaseModel, SecretStr

from shared.document import Deployment, GpuPlan, ReadinessWatch, RunpodResources
from shared.gpu import GpuTier
from shared.lifecycle import Status
from shared.models import CacheScope, DeploymentView, SkippedPoolView
from tests.unit.factories import T0, deployment

T1 = T0 + timedelta(minutes=1)
T2 = T0 + timedelta(minutes=2)
SECRET_WORDS = ("token", "secret", "password", "api_key", "aws_secret")


def _stored() -> dict[str, Any]:
    """A document as Firestore holds it."""
    return {
        "deployment_id": "dep-1",
        "owner": "tenant-1",
        "status": "failed",
        "hf_model_id": "org/model",
        "revision": "main",
        "gpu_tier": "standard",
        "cache_scope": "shared",
        "created_at": T0,
        "updated_at": T2,
        "model_commit_sha": "b" * 40,
        "vram_estimate_gb": 30.5,
        "runpod": {
            "endpoint_id": "ep-1",
            "endpoint_url": "https://api.runpod.ai/v2/ep-1",
            "warmup_job_id": "job-1",
            "torn_down_at": T2,
        },
        "gpu": {
            "ranked": ["AMPERE_48", "ADA_48_PRO", "AMPERE_80"],
            "window": ["AMPERE_48", "ADA_48_PRO"],
            "switches": 1,
            "pool_in_use": "AMPERE_48",
        },
        "readiness": {"check": 3, "last_check_at": T1, "throttled_since": T0},
        "phase_timestamps": {"validating": T0, "selecting_gpu": T0, "creating_endpoint": T1, "failed": T2},
        "error": {"code": "timeout", "message": "not ready"},
    }


def test_a_stored_document_reads_into_the_sub_models_and_writes_back_the_same() -> None:
    doc = Deployment.from_firestore(_stored())

    assert doc.runpod == RunpodResources(
        endpoint_id="ep-1", endpoint_url="https://api.runpod.ai/v2/ep-1", warmup_job_id="job-1", torn_down_at=T2
    )
    assert doc.gpu == GpuPlan(
        ranked=["AMPERE_48", "ADA_48_PRO", "AMPERE_80"], window=["AMPERE_48", "ADA_48_PRO"], switches=1
    ).model_copy(update={"pool_in_use": "AMPERE_48"})
    assert doc.readiness == ReadinessWatch(check=3, last_check_at=T1, throttled_since=T0)
    assert doc.phase_timestamps == {
        Status.VALIDATING: T0,
        Status.SELECTING_GPU: T0,
        Status.CREATING_ENDPOINT: T1,
        Status.FAILED: T2,
    }
    assert (doc.status, doc.gpu_tier, doc.cache_scope) == (Status.FAILED, GpuTier.STANDARD, CacheScope.SHARED)
    assert doc.may_exist_on_runpod()
    assert not doc.reached(Status.DOWNLOADING_MODEL)
    assert Deployment.from_firestore(doc.to_firestore()) == doc


def test_fields_a_newer_release_adds_to_a_sub_model_are_kept() -> None:
    data = _stored()
    data["runpod"] = {**data["runpod"], "future_resource": "vol-1"}

    doc = Deployment.from_firestore(data)

    assert doc.runpod.model_extra == {"future_resource": "vol-1"}
    assert doc.to_firestore()["runpod"]["future_resource"] == "vol-1"


def test_fields_a_newer_release_adds_survive_a_read_modify_write() -> None:
    data = deployment().to_firestore()
    data["future_field"] = {"nested": [1, 2]}
    data["gpu"]["future_gpu_field"] = "kept"
    data["readiness"]["future_watch_field"] = 7

    doc = Deployment.from_firestore(data)
    doc.status = Status.DOWNLOADING_MODEL
    stored = doc.to_firestore()

    assert stored["future_field"] == {"nested": [1, 2]}
    assert stored["gpu"]["future_gpu_field"] == "kept"
    assert stored["readiness"]["future_watch_field"] == 7
    assert stored["status"] == "downloading_model"


def test_firestore_gets_enum_values_as_plain_strings_and_datetimes_as_datetimes() -> None:
    doc = deployment(
        status=Status.READY,
        gpu_tier=GpuTier.PERFORMANCE,
        cache_scope=CacheScope.SHARED,
        phase_timestamps={Status.CREATING_ENDPOINT: T1, Status.READY: T2},
        gpu=GpuPlan(skipped=[SkippedPoolView(pool="AMPERE_16", reason="too small")]),
        expires_at=T2,
    )

    stored = doc.to_firestore()

    def enums_in(value: Any) -> list[Any]:
        if isinstance(value, dict):
            return [e for k, v in value.items() for e in enums_in(k) + enums_in(v)]
        if isinstance(value, list):
            return [e for item in value for e in enums_in(item)]
        return [value] if isinstance(value, Enum) else []

    assert enums_in(stored) == []
    assert (type(stored["status"]), stored["status"]) == (str, "ready")
    assert (type(stored["gpu_tier"]), stored["gpu_tier"]) == (str, "performance")
    assert type(stored["cache_scope"]) is str
    assert list(stored["phase_timestamps"]) == ["creating_endpoint", "ready"]
    assert all(type(key) is str for key in stored["phase_timestamps"])
    assert stored["phase_timestamps"]["ready"] == T2
    assert isinstance(stored["phase_timestamps"]["ready"], datetime)
    assert (stored["created_at"], stored["expires_at"]) == (T0, T2)
    assert isinstance(stored["created_at"], datetime)
    assert stored["gpu"]["skipped"] == [{"pool": "AMPERE_16", "reason": "too small"}]


def test_the_public_view_names_the_gpu_and_runpod_fields_as_the_api_does() -> None:
    doc = Deployment.from_firestore(_stored())
    doc.gpu.skipped = [SkippedPoolView(pool="AMPERE_24", reason="24 GB of VRAM, 30.5 GB needed")]

    view = doc.view()

    assert view.gpu_candidates == ["AMPERE_48", "ADA_48_PRO"]
    assert view.gpu_skipped == [SkippedPoolView(pool="AMPERE_24", reason="24 GB of VRAM, 30.5 GB needed")]
    assert view.gpu_pool == "AMPERE_48"
    assert (view.endpoint_id, view.endpoint_url) == ("ep-1", "https://api.runpod.ai/v2/ep-1")
    assert view.phase_timestamps == {"validating": T0, "selecting_gpu": T0, "creating_endpoint": T1, "failed": T2}
    assert (view.deployment_id, view.status, view.vram_estimate_gb) == ("dep-1", Status.FAILED, 30.5)
    assert view.error is not None
    assert view.error.code == "timeout"
    dumped = view.model_dump(mode="json")
    assert "owner" not in dumped
    assert "tpl-1" not in str(dumped)  # stored leftovers stay out of the API


# --- no secrets ---------------------------------------------------------------------------------------------------


def _fields(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> list[tuple[str, Any]]:
    """Every field of ``model`` and of the models its fields hold (in unions, lists, dicts), as (path, type)."""
    seen = seen if seen is not None else set()
    if model in seen:
        return []
    seen.add(model)
    found: list[tuple[str, Any]] = []
    for name, info in model.model_fields.items():
        found.append((f"{model.__name__}.{name}", info.annotation))
        for inner in _types_in(info.annotation):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                found += _fields(inner, seen)
    return found


def _types_in(annotation: Any) -> list[Any]:
    args = typing.get_args(annotation)
    if not args:
        return [annotation]
    origin = typing.get_origin(annotation)
    nested = [t for arg in args for t in _types_in(arg)]
    return nested if origin in (typing.Union, types.UnionType) else [origin, *nested]


def test_the_walk_sees_into_sub_models() -> None:
    names = {path for path, _ in _fields(Deployment)}

    assert {"RunpodResources.endpoint_id", "GpuPlan.skipped", "SkippedPoolView.reason", "ErrorInfo.code"} <= names
    assert {"ReadinessWatch.throttled_since", "Progress.bytes_done", "Timings.load_s"} <= names


def test_neither_the_document_nor_the_view_holds_a_secret() -> None:
    for model in (Deployment, DeploymentView):
        for path, annotation in _fields(model):
            assert SecretStr not in _types_in(annotation), path
            name = path.rsplit(".", 1)[1]
            if any(word in name for word in SECRET_WORDS):
                # Only a flag may say that a secret exists (``has_hf_token``); nothing may hold one.
                assert annotation is bool, f"{path} looks like a secret ({annotation})"

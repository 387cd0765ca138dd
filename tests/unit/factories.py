"""Builders for the unit tests: settings with test secrets, and deployment documents with fresh ids."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

from shared.config import CallbackSettings
from shared.document import Deployment
from shared.lifecycle import Status

SEALING_KEY = base64.b64encode(bytes(range(32))).decode()
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
COMMIT = "a" * 40


def settings(**overrides: Any) -> CallbackSettings:
    """Settings as a deployable would build them, with a test sealing key; every override by its field name. The
    callback function's, the widest of the provisioning steps' (it also holds the shared cache's keys), so that a
    test can check those keys never reach a worker."""
    return CallbackSettings(sealing_key=SEALING_KEY, **overrides)


def deployment(**fields: Any) -> Deployment:
    """A stored deployment (fresh id) in ``creating_endpoint`` unless told otherwise."""
    values: dict[str, Any] = {
        "deployment_id": f"dep-{uuid.uuid4().hex[:12]}",
        "owner": "tenant-1",
        "status": Status.CREATING_ENDPOINT,
        "hf_model_id": "org/model",
        "model_commit_sha": COMMIT,
        "vram_estimate_gb": 10.0,
        "created_at": T0,
        "updated_at": T0,
    }
    return Deployment.model_validate(values | fields)

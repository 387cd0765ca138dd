"""Who is calling: the Runpod API key names the tenant; the key itself is never stored."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Request

from shared.crypto import tenant_id
from shared.errors import ApiError
from shared.jobs.records import OWNER_SUBMITTER


@dataclass(frozen=True)
class Caller:
    """``api_key`` is the caller's Runpod key; empty for an invoke-key caller, who is scoped to ``deployment_id``
    and is the key ``invoke_key_id``."""

    tenant: str
    api_key: str
    deployment_id: str | None = None
    invoke_key_id: str | None = None

    @property
    def submitter(self) -> str:
        """Who a job this caller submits is recorded as (``submitted_by``): the invoke key's id, or ``owner``."""
        return self.invoke_key_id if self.invoke_key_id is not None else OWNER_SUBMITTER


def invoke_key_refused() -> ApiError:
    """401 ``invalid_api_key`` for an invoke key: unknown, revoked, on another route, or of a deployment that is
    being deleted or was deleted."""
    return ApiError(
        401,
        "invalid_api_key",
        "an invoke key (vdk_...) opens only the run, runsync, jobs and get routes of its live deployment",
        headers={"WWW-Authenticate": 'Bearer realm="visgate", error="invalid_token"'},
    )


def authenticate(request: Request, pepper: str) -> Caller:
    """``Authorization: Bearer <key>`` or ``X-Runpod-Api-Key: <key>``; missing or empty → 401."""
    key = ""
    authorization = request.headers.get("Authorization", "")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            key = value.strip()
    if not key:
        key = request.headers.get("X-Runpod-Api-Key", "").strip()
    if not key:
        raise ApiError(
            401,
            "unauthenticated",
            "send your Runpod API key as 'Authorization: Bearer <key>' or 'X-Runpod-Api-Key'",
            headers={"WWW-Authenticate": 'Bearer realm="visgate"'},
        )
    return Caller(tenant=tenant_id(pepper, key), api_key=key)

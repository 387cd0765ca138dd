"""The account side of the job API: a deployment's invoke keys, the caller's usage, and the GPU pools."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from flask import Request, Response

from shared.errors import ApiError
from shared.http import json_response
from shared.intake.auth import Caller
from shared.intake.steps import owned_deployment
from shared.jobs.invoke_keys import TooManyInvokeKeysError
from shared.jobs.routes import JobDeps, runpod_errors
from shared.jobs.schemas import DeploymentUsage, GpuList, GpuPoolView, InvokeKeyCreated, InvokeKeyList, UsageReport
from shared.lifecycle import Status
from shared.models import Usage

USAGE_DEFAULT_DAYS = 30
USAGE_MAX_DAYS = 366


class AccountRoutes:
    """The handlers of the key, usage and GPU routes, registered into the intake API's handler table."""

    def __init__(self, deps: JobDeps) -> None:
        self._deps = deps

    def handlers(self) -> dict[str, Callable[..., Response]]:
        return {
            "create_invoke_key": self.create_key,
            "list_invoke_keys": self.list_keys,
            "revoke_invoke_key": self.revoke_key,
            "usage": self.usage,
            "gpus": self.gpus,
        }

    # --- invoke keys --------------------------------------------------------------------------------------------

    def create_key(self, _request: Request, caller: Caller, deployment_id: str) -> Response:
        doc = owned_deployment(self._deps.store, caller, deployment_id)
        if doc.status in (Status.DELETING, Status.DELETED):
            raise ApiError(409, "deployment_not_ready", "the deployment is deleted", {"status": doc.status.value})
        limit = self._deps.settings.max_invoke_keys_per_deployment
        try:
            stored, key = self._deps.invoke_keys.create(deployment_id, doc.owner, limit)
        except TooManyInvokeKeysError as exc:
            raise ApiError(409, "too_many_invoke_keys", f"a deployment may have at most {limit} invoke keys") from exc
        created = InvokeKeyCreated(key=key, **stored.model_dump())
        return json_response(created, 201, headers={"Cache-Control": "no-store"})

    def list_keys(self, _request: Request, caller: Caller, deployment_id: str) -> Response:
        owned_deployment(self._deps.store, caller, deployment_id)
        return json_response(InvokeKeyList(keys=self._deps.invoke_keys.list(deployment_id)))

    def revoke_key(self, _request: Request, caller: Caller, deployment_id: str, key_id: str) -> Response:
        owned_deployment(self._deps.store, caller, deployment_id)
        if not self._deps.invoke_keys.revoke(deployment_id, key_id):
            raise ApiError(404, "invoke_key_not_found", f"no invoke key {key_id!r} on this deployment")
        return Response(status=204)

    # --- usage and GPUs -----------------------------------------------------------------------------------------

    def usage(self, request: Request, caller: Caller) -> Response:
        first, last = _usage_period(request.args.get("from"), request.args.get("to"))
        per_deployment = self._deps.jobs.usage_by_deployment(caller.tenant, first, last)
        total = Usage()
        for usage in per_deployment.values():
            total = Usage.model_validate(
                {name: getattr(total, name) + getattr(usage, name) for name in Usage.model_fields}
            )
        rows = [DeploymentUsage(deployment_id=d, usage=u) for d, u in sorted(per_deployment.items())]
        return json_response(UsageReport(from_day=first, to_day=last, deployments=rows, total=total))

    def gpus(self, _request: Request, caller: Caller) -> Response:
        client = self._deps.runpod.client(caller.api_key)
        with runpod_errors():
            pools = self._deps.catalog.pools(client.gpu_catalog)
        views = [
            GpuPoolView(
                pool=p.id,
                vram_gb=p.vram_gb,
                tier=p.tier,
                usd_per_second=p.usd_per_second,
                usd_per_hour=round(p.usd_per_second * 3600, 4),
                available=p.available,
                gpu_type_ids=list(p.gpu_type_ids),
            )
            for p in sorted(pools, key=lambda p: (p.vram_gb, p.usd_per_second, p.id))
        ]
        return json_response(GpuList(pools=views))


def _usage_period(first: str | None, last: str | None) -> tuple[date, date]:
    try:
        to_day = date.fromisoformat(last) if last else datetime.now(UTC).date()
        from_day = date.fromisoformat(first) if first else to_day - timedelta(days=USAGE_DEFAULT_DAYS - 1)
    except ValueError as exc:
        raise ApiError(400, "invalid_period", "from and to must be dates (YYYY-MM-DD, UTC)") from exc
    if from_day > to_day or (to_day - from_day).days >= USAGE_MAX_DAYS:
        raise ApiError(
            400, "invalid_period", f"from must not be after to, and the period must be at most {USAGE_MAX_DAYS} days"
        )
    return from_day, to_day

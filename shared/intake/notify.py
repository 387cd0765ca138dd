"""The intake routes that tell the user: webhook secret, deliveries and redelivery, Firebase client tokens.

Same auth (the Runpod key), rate limit, error shape and 404 rules as the other routes (a deployment of another
tenant, or a delivery of another deployment, is a 404).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from flask import Request, Response
from pydantic import BaseModel

from shared.errors import ApiError
from shared.http import json_response
from shared.intake import steps
from shared.intake.auth import Caller
from shared.intake.client_tokens import TOKEN_LIFETIME_S, ClientTokenIssuer
from shared.webhooks.steps import WebhookDeps, redeliver

_DELIVERY_ID = re.compile(r"^dlv_[0-9a-f]{32}$")


class WebhookSecretResponse(BaseModel):
    """``GET /v1/webhook-secret``: the tenant's current signing secret (Standard Webhooks)."""

    secret: str
    created_at: datetime


class RotatedWebhookSecretResponse(BaseModel):
    """``POST /v1/webhook-secret/rotate``: the new secret; the old one also signs until ``previous_valid_until``."""

    secret: str
    created_at: datetime
    previous_valid_until: datetime | None = None


class ClientTokenResponse(BaseModel):
    """``POST /v1/client-token``: a Firebase Authentication custom token whose claim ``tenant`` is the caller's."""

    custom_token: str
    tenant: str
    project_id: str
    expires_in: int


class DeliveryAttempt(BaseModel):
    at: datetime
    status_code: int | None = None
    latency_ms: int
    error: str | None = None


class DeliveryView(BaseModel):
    delivery_id: str
    event_type: str  # deployment.<status>, or job.<state> for a job webhook (then job_id says which job)
    job_id: str | None = None
    webhook_id: str
    state: Literal["pending", "delivered", "failed", "stopped"]
    attempts: list[DeliveryAttempt]
    created_at: datetime
    redelivery_of: str | None = None


class DeliveryList(BaseModel):
    """``GET /v1/deployments/{id}/deliveries``: every webhook delivery of the deployment, oldest first."""

    deliveries: list[DeliveryView]


def delivery_view(record: dict[str, Any]) -> DeliveryView:
    return DeliveryView.model_validate({k: v for k, v in record.items() if k in DeliveryView.model_fields})


class NotifyRoutes:
    """Handlers of the notify routes, on the webhooks' collaborators and the client-token issuer of the instance (the
    Cloud Tasks client and the Firebase app are built on first use)."""

    def __init__(self, deps: steps.IntakeDeps, webhooks: WebhookDeps, tokens: ClientTokenIssuer) -> None:
        self._deps = deps
        self._webhooks = webhooks
        self._tokens = tokens

    def handlers(self) -> dict[str, Callable[..., Response]]:
        return {
            "get_webhook_secret": self._get_secret,
            "rotate_webhook_secret": self._rotate_secret,
            "client_token": self._client_token,
            "list_deliveries": self._list_deliveries,
            "redeliver": self._redeliver,
        }

    def _get_secret(self, _request: Request, caller: Caller) -> Response:
        secret = self._webhooks.secrets.get_or_create(caller.tenant)
        return json_response(WebhookSecretResponse(secret=secret.secret, created_at=secret.created_at))

    def _rotate_secret(self, _request: Request, caller: Caller) -> Response:
        secret = self._webhooks.secrets.rotate(caller.tenant)
        return json_response(
            RotatedWebhookSecretResponse(
                secret=secret.secret, created_at=secret.created_at, previous_valid_until=secret.previous_valid_until
            )
        )

    def _client_token(self, _request: Request, caller: Caller) -> Response:
        token = self._tokens.issue(caller.tenant)
        return json_response(
            ClientTokenResponse(
                custom_token=token,
                tenant=caller.tenant,
                project_id=self._tokens.project_id,
                expires_in=TOKEN_LIFETIME_S,
            )
        )

    def _list_deliveries(self, _request: Request, caller: Caller, deployment_id: str) -> Response:
        steps.owned_deployment(self._deps.store, caller, deployment_id)
        records = self._webhooks.records.for_deployment(deployment_id)
        return json_response(DeliveryList(deliveries=[delivery_view(r) for r in records]))

    def _redeliver(self, _request: Request, caller: Caller, deployment_id: str, delivery_id: str) -> Response:
        steps.owned_deployment(self._deps.store, caller, deployment_id)
        fresh = redeliver(self._webhooks, deployment_id, delivery_id) if _DELIVERY_ID.fullmatch(delivery_id) else None
        if fresh is None:
            raise ApiError(404, "delivery_not_found", f"no delivery {delivery_id!r} of this deployment")
        return json_response(delivery_view(fresh), 202)

"""Every route of the API, declared once (shared.intake.route_table): the intake's routing, its dispatch, the
invoke-key scope and the OpenAPI document are generated from :data:`ROUTES`."""

from __future__ import annotations

from typing import Any

from shared.intake.lifecycle_routes import LifecycleActionResponse
from shared.intake.notify import (
    ClientTokenResponse,
    DeliveryList,
    DeliveryView,
    RotatedWebhookSecretResponse,
    WebhookSecretResponse,
)
from shared.intake.route_table import Answer, Callers, Route
from shared.jobs.invoke_keys import KEY_ID_PATTERN
from shared.jobs.records import JOB_ID_PATTERN, JobView
from shared.jobs.schemas import (
    WAIT_MS_DEFAULT,
    WAIT_MS_MAX,
    WAIT_MS_MIN,
    GpuList,
    InvokeKeyCreated,
    InvokeKeyList,
    JobAccepted,
    JobList,
    JobResult,
    RunRequest,
    UsageReport,
)
from shared.lifecycle import Status
from shared.models import (
    CreateDeploymentRequest,
    CreateDeploymentResponse,
    DeleteDeploymentResponse,
    DeploymentList,
    DeploymentLogs,
    DeploymentView,
    UpdateDeploymentRequest,
)
from shared.page_tokens import MAX_PAGE_TOKEN_CHARS
from shared.store import DEPLOYMENT_ID_PATTERN

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_AUTHED = (401, 429, 500, 503)
_PAGING: tuple[dict[str, Any], ...] = (
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
    {
        "name": "page_token",
        "in": "query",
        "schema": {"type": "string", "maxLength": MAX_PAGE_TOKEN_CHARS, "pattern": "^[A-Za-z0-9_-]+$"},
    },
)
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    name: {"name": name, "in": "path", "required": True, "schema": schema}
    for name, schema in {
        "deployment_id": {"type": "string", "pattern": f"^{DEPLOYMENT_ID_PATTERN}$"},
        "job_id": {"type": "string", "pattern": f"^{JOB_ID_PATTERN}$"},
        "key_id": {"type": "string", "pattern": f"^{KEY_ID_PATTERN}$"},
        "delivery_id": {"type": "string"},
    }.items()
}
_NOT_READY = {409: "deployment_not_ready: the deployment is not ready (details.status says what it is)"}
_JOB_404 = {404: "no such deployment (or not yours), or job_not_found"}
_RUNPOD_ERRORS = (400, 404, 409, 413, 415, *_AUTHED, 502, 504)
_ONE = "/v1/deployments/<id:deployment_id>"

DEPLOYMENT_ROUTES = (
    Route(
        "/v1/deployments",
        "POST",
        "create_deployment",
        (
            Answer(
                202,
                "accepted (or the replay of a key's first answer)",
                CreateDeploymentResponse,
                headers={"Location": {"description": "the deployment's status_url", "schema": {"type": "string"}}},
            ),
        ),
        (400, 409, 413, 415, *_AUTHED),
        request=CreateDeploymentRequest,
        parameters=(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "maxLength": 255},
            },
        ),
        described={
            409: "idempotency_key_reused (the key was used with another body); or "
            "tenant_limit_reached (details: limit, current, counter)"
        },
    ),
    Route(
        "/v1/deployments",
        "GET",
        "list_deployments",
        (Answer(200, "the caller's deployments", DeploymentList),),
        (400, *_AUTHED),
        parameters=(
            {"name": "status", "in": "query", "schema": {"type": "string", "enum": [s.value for s in Status]}},
            *_PAGING,
        ),
    ),
    Route(
        _ONE, "GET", "get_deployment", (Answer(200, "the deployment", DeploymentView),), (404, *_AUTHED), Callers.INVOKE
    ),
    Route(
        _ONE,
        "DELETE",
        "delete_deployment",
        (Answer(202, "teardown started", DeleteDeploymentResponse),),
        (404, *_AUTHED),
    ),
    Route(
        _ONE,
        "PATCH",
        "update_deployment",
        (Answer(200, "the deployment with its new budget", DeploymentView),),
        (400, 404, 409, 413, 415, *_AUTHED),
        request=UpdateDeploymentRequest,
        described={409: "invalid_state: the deployment is being deleted"},
    ),
    Route(
        f"{_ONE}/stream",
        "GET",
        "stream_deployment",
        (
            Answer(
                200,
                "Server-Sent Events: the current state, then one 'deployment' event per change (each with an id; "
                "Last-Event-ID resumes after it), a ': keep-alive' comment every 15 s, and 'end' after a terminal "
                "status",
                content={"text/event-stream": {"schema": {"type": "string"}}},
            ),
        ),
        (404, *_AUTHED),
        parameters=({"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},),
    ),
    Route(
        f"{_ONE}/logs",
        "GET",
        "deployment_logs",
        (Answer(200, "the deployment's event log (last lines, oldest first)", DeploymentLogs),),
        (404, *_AUTHED),
    ),
    Route(
        f"{_ONE}/stop",
        "POST",
        "stop_deployment",
        (Answer(202, "stopped: workers 0 on Runpod, the endpoint is kept", LifecycleActionResponse),),
        (404, 409, 503, *_AUTHED),
    ),
    Route(
        f"{_ONE}/start",
        "POST",
        "start_deployment",
        (Answer(202, "workers restored; the worker proves the model again", LifecycleActionResponse),),
        (404, 409, 503, *_AUTHED),
        described={409: "invalid_state (not stopped); or budget_exhausted (raise or clear max_cost_usd first)"},
    ),
)

NOTIFY_ROUTES = (
    Route(
        "/v1/webhook-secret",
        "GET",
        "get_webhook_secret",
        (Answer(200, "the current secret", WebhookSecretResponse),),
        _AUTHED,
        description="The tenant's webhook signing secret (created on first call, sealed at rest).",
    ),
    Route(
        "/v1/webhook-secret/rotate",
        "POST",
        "rotate_webhook_secret",
        (Answer(200, "the new secret", RotatedWebhookSecretResponse),),
        _AUTHED,
        description="A new secret; for 24 h both sign (two signatures in webhook-signature).",
    ),
    Route(
        "/v1/client-token",
        "POST",
        "client_token",
        (Answer(200, "the custom token", ClientTokenResponse),),
        _AUTHED,
        description="A Firebase Authentication custom token (claim tenant) to listen to Firestore.",
    ),
    Route(
        f"{_ONE}/deliveries",
        "GET",
        "list_deliveries",
        (Answer(200, "the deployment's webhook deliveries, every attempt recorded", DeliveryList),),
        (404, *_AUTHED),
    ),
    Route(
        f"{_ONE}/deliveries/<delivery_id>/redeliver",
        "POST",
        "redeliver",
        (Answer(202, "a fresh delivery of the same event (same webhook-id)", DeliveryView),),
        (404, *_AUTHED),
    ),
)

JOB_ROUTES = (
    Route(
        f"{_ONE}/runsync",
        "POST",
        "runsync_job",
        (
            Answer(200, "the job ended within the wait", JobResult),
            Answer(202, "the job runs on: poll status_url", JobAccepted),
        ),
        _RUNPOD_ERRORS,
        Callers.INVOKE,
        request=RunRequest,
        parameters=(
            {
                "name": "wait",
                "in": "query",
                "description": "ms to wait for the job to finish",
                "schema": {
                    "type": "integer",
                    "minimum": WAIT_MS_MIN,
                    "maximum": WAIT_MS_MAX,
                    "default": WAIT_MS_DEFAULT,
                },
            },
        ),
        described=_NOT_READY,
    ),
    Route(
        f"{_ONE}/run",
        "POST",
        "run_job",
        (Answer(202, "queued: poll status_url", JobAccepted),),
        _RUNPOD_ERRORS,
        Callers.INVOKE,
        request=RunRequest,
        described=_NOT_READY,
    ),
    Route(
        f"{_ONE}/jobs",
        "GET",
        "list_jobs",
        (Answer(200, "the deployment's jobs, newest first", JobList),),
        (400, 404, *_AUTHED),
        Callers.INVOKE,
        parameters=_PAGING,
    ),
    Route(
        f"{_ONE}/jobs/<job:job_id>",
        "GET",
        "get_job",
        (
            Answer(
                200,
                "the job, refreshed from Runpod while it is not final (a completed job's output while Runpod keeps it)",
                JobView,
            ),
        ),
        (404, *_AUTHED, 502, 504),
        Callers.INVOKE,
        described=_JOB_404,
    ),
    Route(
        f"{_ONE}/jobs/<job:job_id>/cancel",
        "POST",
        "cancel_job",
        (Answer(200, "the job after the cancel (a final job stays as it was)", JobView),),
        (404, *_AUTHED, 502, 504),
        Callers.INVOKE,
        described=_JOB_404,
    ),
)

ACCOUNT_ROUTES = (
    Route(
        f"{_ONE}/keys",
        "POST",
        "create_invoke_key",
        (Answer(201, "the new invoke key, shown this once", InvokeKeyCreated),),
        (404, 409, *_AUTHED),
        described={409: "deleted, or too many keys"},
    ),
    Route(
        f"{_ONE}/keys",
        "GET",
        "list_invoke_keys",
        (Answer(200, "ids, prefixes, creation times", InvokeKeyList),),
        (404, *_AUTHED),
    ),
    Route(
        f"{_ONE}/keys/<key:key_id>",
        "DELETE",
        "revoke_invoke_key",
        (Answer(204, "revoked: refused from now on"),),
        (404, *_AUTHED),
    ),
    Route(
        "/v1/usage",
        "GET",
        "usage",
        (Answer(200, "the caller's usage per deployment and overall (UTC days)", UsageReport),),
        (400, *_AUTHED),
        parameters=(
            {"name": "from", "in": "query", "schema": {"type": "string", "format": "date"}},
            {"name": "to", "in": "query", "schema": {"type": "string", "format": "date"}},
        ),
    ),
    Route(
        "/v1/gpus",
        "GET",
        "gpus",
        (Answer(200, "the pools a deployment can use, from Runpod's catalog (cached briefly)", GpuList),),
        (*_AUTHED, 502, 504),
    ),
)

SERVICE_ROUTES = (
    Route(
        "/health",
        "GET",
        "health",
        (
            Answer(
                200,
                "Firestore answers",
                content={
                    "application/json": {
                        "schema": {"type": "object", "properties": {"status": {"const": "ok"}}, "required": ["status"]}
                    }
                },
            ),
        ),
        (500, 503),
        Callers.ANYONE,
    ),
    Route(
        "/metrics",
        "GET",
        "metrics",
        (
            Answer(
                200,
                "Prometheus text exposition format 0.0.4 (computed at most every 30 s per instance)",
                content={PROMETHEUS_CONTENT_TYPE: {"schema": {"type": "string"}}},
            ),
        ),
        (401, 500, 503),
        Callers.METRICS,
        described={401: "no or a wrong METRICS_TOKEN"},
    ),
    Route(
        "/openapi.json",
        "GET",
        "openapi",
        (Answer(200, "this document", content={"application/json": {}}),),
        (500,),
        Callers.ANYONE,
    ),
)

ROUTES: tuple[Route, ...] = (
    *DEPLOYMENT_ROUTES[:7],
    *NOTIFY_ROUTES,
    *DEPLOYMENT_ROUTES[7:],
    *JOB_ROUTES,
    *ACCOUNT_ROUTES,
    *SERVICE_ROUTES,
)

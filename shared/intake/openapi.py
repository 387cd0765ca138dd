"""OpenAPI 3.1 document generated from the pydantic models the API really uses."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared.intake import notify
from shared.intake.lifecycle_routes import LifecycleActionResponse
from shared.jobs.invoke_keys import KEY_ID_PATTERN
from shared.jobs.records import JOB_ID_PATTERN, JobView
from shared.jobs.routes import WAIT_MS_DEFAULT, WAIT_MS_MAX, WAIT_MS_MIN
from shared.jobs.schemas import (
    API_MODELS,
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
    ErrorResponse,
    UpdateDeploymentRequest,
)
from shared.page_tokens import MAX_PAGE_TOKEN_CHARS
from shared.store import DEPLOYMENT_ID_PATTERN

_REF = "#/components/schemas/{model}"
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_MODELS: tuple[type[BaseModel], ...] = (
    CreateDeploymentRequest,
    CreateDeploymentResponse,
    DeleteDeploymentResponse,
    DeploymentList,
    DeploymentLogs,
    DeploymentView,
    ErrorResponse,
    UpdateDeploymentRequest,
    *notify.MODELS,
    LifecycleActionResponse,
    *API_MODELS,
)

_PAGE_TOKEN = {
    "name": "page_token",
    "in": "query",
    "schema": {"type": "string", "maxLength": MAX_PAGE_TOKEN_CHARS, "pattern": "^[A-Za-z0-9_-]+$"},
}


def _ref(model: type) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(model: type, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer", "minimum": 1}}
}
_ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "the scheme to use", "schema": {"type": "string"}}},
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}


def _errors(*codes: int, described: dict[int, str] | None = None) -> dict[str, Any]:
    text = {
        400: "invalid input",
        401: "missing API key",
        404: "no such deployment (or not yours)",
        409: "Idempotency-Key reused with another body; or invalid_state (stop/start in the wrong status)",
        413: "body larger than 64 KiB",
        415: "body is not JSON",
        429: "rate limited (see Retry-After)",
        500: "an internal error (logged with the request id)",
        502: "Runpod failed: runpod_unreachable, or runpod_auth_failed (it refused the deployment's Runpod key)",
        503: "a dependency is unavailable (see Retry-After)",
        504: "runpod_timeout: Runpod did not answer in time",
        **(described or {}),
    }
    responses = {str(code): _json(ErrorResponse, text[code]) for code in codes}
    for code in codes:
        if code in _ERROR_HEADERS:
            responses[str(code)]["headers"] = _ERROR_HEADERS[code]
    return responses


_ID = {
    "name": "deployment_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": f"^{DEPLOYMENT_ID_PATTERN}$"},
}
_AUTHED = (401, 429, 500, 503)
_DESCRIPTION = (
    "Every error has the shape of ErrorResponse. A path that matches no route (an id this API never issues included) "
    "is 404 `not_found`; a method a path does not serve is 405 `method_not_allowed` with an Allow header."
)


@lru_cache(maxsize=4)
def openapi_document(server_url: str) -> dict[str, Any]:
    _, schemas = models_json_schema([(m, "validation") for m in _MODELS], ref_template=_REF)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Visgate Deploy API", "version": "1.0.0", "description": _DESCRIPTION},
        "servers": [{"url": server_url}],
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "your Runpod API key"},
                "runpodKey": {"type": "apiKey", "in": "header", "name": "X-Runpod-Api-Key"},
                "invokeKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a per-deployment invoke key (vdk_...): its run, runsync, jobs and get routes",
                },
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the operator's METRICS_TOKEN (GET /metrics only)",
                },
            },
        },
        "security": [{"bearer": []}, {"runpodKey": []}],
        "paths": {
            "/v1/deployments": {
                "post": {
                    "operationId": "create_deployment",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "maxLength": 255},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref(CreateDeploymentRequest)}},
                    },
                    "responses": {
                        "202": {
                            **_json(CreateDeploymentResponse, "accepted (or the replay of a key's first answer)"),
                            "headers": {
                                "Location": {"description": "the deployment's status_url", "schema": {"type": "string"}}
                            },
                        },
                        **_errors(
                            400,
                            409,
                            413,
                            415,
                            *_AUTHED,
                            described={
                                409: "idempotency_key_reused (the key was used with another body); or "
                                "tenant_limit_reached (details: limit, current, counter)"
                            },
                        ),
                    },
                },
                "get": {
                    "operationId": "list_deployments",
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"type": "string", "enum": [s.value for s in Status]},
                        },
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                        _PAGE_TOKEN,
                    ],
                    "responses": {"200": _json(DeploymentList, "the caller's deployments"), **_errors(400, *_AUTHED)},
                },
            },
            "/v1/deployments/{deployment_id}": {
                "get": {
                    "operationId": "get_deployment",
                    "security": _INVOKE_SECURITY,
                    "parameters": [_ID],
                    "responses": {"200": _json(DeploymentView, "the deployment"), **_errors(404, *_AUTHED)},
                },
                "delete": {
                    "operationId": "delete_deployment",
                    "parameters": [_ID],
                    "responses": {"202": _json(DeleteDeploymentResponse, "teardown started"), **_errors(404, *_AUTHED)},
                },
                "patch": {
                    "operationId": "update_deployment",
                    "parameters": [_ID],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref(UpdateDeploymentRequest)}},
                    },
                    "responses": {
                        "200": _json(DeploymentView, "the deployment with its new budget"),
                        **_errors(
                            400,
                            404,
                            409,
                            413,
                            415,
                            *_AUTHED,
                            described={409: "invalid_state: the deployment is being deleted"},
                        ),
                    },
                },
            },
            "/v1/deployments/{deployment_id}/stream": {
                "get": {
                    "operationId": "stream_deployment",
                    "parameters": [
                        _ID,
                        {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {
                            "description": "Server-Sent Events: the current state, then one 'deployment' event per "
                            "change (each with an id; Last-Event-ID resumes after it), a ': keep-alive' comment every "
                            "15 s, and 'end' after a terminal status",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_errors(404, *_AUTHED),
                    },
                }
            },
            "/v1/deployments/{deployment_id}/logs": {
                "get": {
                    "operationId": "deployment_logs",
                    "parameters": [_ID],
                    "responses": {
                        "200": _json(DeploymentLogs, "the deployment's event log (last lines, oldest first)"),
                        **_errors(404, *_AUTHED),
                    },
                }
            },
            **notify.openapi_paths(_json, _errors, _ID, _AUTHED),
            "/v1/deployments/{deployment_id}/stop": {
                "post": {
                    "operationId": "stop_deployment",
                    "parameters": [_ID],
                    "responses": {
                        "202": _json(LifecycleActionResponse, "stopped: workers 0 on Runpod, the endpoint is kept"),
                        **_errors(404, 409, 503, *_AUTHED),
                    },
                }
            },
            "/v1/deployments/{deployment_id}/start": {
                "post": {
                    "operationId": "start_deployment",
                    "parameters": [_ID],
                    "responses": {
                        "202": _json(LifecycleActionResponse, "workers restored; the worker proves the model again"),
                        **_errors(
                            404,
                            409,
                            503,
                            *_AUTHED,
                            described={
                                409: "invalid_state (not stopped); or budget_exhausted (raise or clear max_cost_usd "
                                "first)"
                            },
                        ),
                    },
                }
            },
            **_inference_paths(),
            "/health": {
                "get": {
                    "operationId": "health",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Firestore answers",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {"status": {"const": "ok"}},
                                        "required": ["status"],
                                    }
                                }
                            },
                        },
                        **_errors(500, 503),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "security": [{"metricsToken": []}],
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format 0.0.4 (computed at most every 30 s per "
                            "instance)",
                            "content": {PROMETHEUS_CONTENT_TYPE: {"schema": {"type": "string"}}},
                        },
                        **_errors(401, 500, 503, described={401: "no or a wrong METRICS_TOKEN"}),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "security": [],
                    "responses": {
                        "200": {"description": "this document", "content": {"application/json": {}}},
                        **_errors(500),
                    },
                }
            },
        },
    }


_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": f"^{JOB_ID_PATTERN}$"},
}
_KEY_ID = {
    "name": "key_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": f"^{KEY_ID_PATTERN}$"},
}
# Routes an invoke key (vdk_...) opens for its own deployment, besides the Runpod key.
_INVOKE_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"runpodKey": []}, {"invokeKey": []}]
_NOT_READY = {409: "deployment_not_ready: the deployment is not ready (details.status says what it is)"}
_JOB_404 = {404: "no such deployment (or not yours), or job_not_found"}


def _inference_paths() -> dict[str, Any]:
    """Jobs, invoke keys, usage and GPU pools (shared.jobs.routes)."""
    run_body = {"required": True, "content": {"application/json": {"schema": _ref(RunRequest)}}}
    wait = {
        "name": "wait",
        "in": "query",
        "description": "ms to wait for the job to finish",
        "schema": {"type": "integer", "minimum": WAIT_MS_MIN, "maximum": WAIT_MS_MAX, "default": WAIT_MS_DEFAULT},
    }
    paging = [
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
        _PAGE_TOKEN,
    ]
    runpod_errors = (400, 404, 409, 413, 415, *_AUTHED, 502, 504)
    return {
        "/v1/deployments/{deployment_id}/runsync": {
            "post": {
                "operationId": "runsync_job",
                "security": _INVOKE_SECURITY,
                "parameters": [_ID, wait],
                "requestBody": run_body,
                "responses": {
                    "200": _json(JobResult, "the job ended within the wait"),
                    "202": _json(JobAccepted, "the job runs on: poll status_url"),
                    **_errors(*runpod_errors, described=_NOT_READY),
                },
            }
        },
        "/v1/deployments/{deployment_id}/run": {
            "post": {
                "operationId": "run_job",
                "security": _INVOKE_SECURITY,
                "parameters": [_ID],
                "requestBody": run_body,
                "responses": {
                    "202": _json(JobAccepted, "queued: poll status_url"),
                    **_errors(*runpod_errors, described=_NOT_READY),
                },
            }
        },
        "/v1/deployments/{deployment_id}/jobs": {
            "get": {
                "operationId": "list_jobs",
                "security": _INVOKE_SECURITY,
                "parameters": [_ID, *paging],
                "responses": {
                    "200": _json(JobList, "the deployment's jobs, newest first"),
                    **_errors(400, 404, *_AUTHED),
                },
            }
        },
        "/v1/deployments/{deployment_id}/jobs/{job_id}": {
            "get": {
                "operationId": "get_job",
                "security": _INVOKE_SECURITY,
                "parameters": [_ID, _JOB_ID],
                "responses": {
                    "200": _json(
                        JobView,
                        "the job, refreshed from Runpod while it is not final (a completed job's output while Runpod"
                        " keeps it)",
                    ),
                    **_errors(404, *_AUTHED, 502, 504, described=_JOB_404),
                },
            }
        },
        "/v1/deployments/{deployment_id}/jobs/{job_id}/cancel": {
            "post": {
                "operationId": "cancel_job",
                "security": _INVOKE_SECURITY,
                "parameters": [_ID, _JOB_ID],
                "responses": {
                    "200": _json(JobView, "the job after the cancel (a final job stays as it was)"),
                    **_errors(404, *_AUTHED, 502, 504, described=_JOB_404),
                },
            }
        },
        "/v1/deployments/{deployment_id}/keys": {
            "post": {
                "operationId": "create_invoke_key",
                "parameters": [_ID],
                "responses": {
                    "201": _json(InvokeKeyCreated, "the new invoke key, shown this once"),
                    **_errors(404, 409, *_AUTHED, described={409: "deleted, or too many keys"}),
                },
            },
            "get": {
                "operationId": "list_invoke_keys",
                "parameters": [_ID],
                "responses": {"200": _json(InvokeKeyList, "ids, prefixes, creation times"), **_errors(404, *_AUTHED)},
            },
        },
        "/v1/deployments/{deployment_id}/keys/{key_id}": {
            "delete": {
                "operationId": "revoke_invoke_key",
                "parameters": [_ID, _KEY_ID],
                "responses": {"204": {"description": "revoked: refused from now on"}, **_errors(404, *_AUTHED)},
            }
        },
        "/v1/usage": {
            "get": {
                "operationId": "usage",
                "parameters": [
                    {"name": "from", "in": "query", "schema": {"type": "string", "format": "date"}},
                    {"name": "to", "in": "query", "schema": {"type": "string", "format": "date"}},
                ],
                "responses": {
                    "200": _json(UsageReport, "the caller's usage per deployment and overall (UTC days)"),
                    **_errors(400, *_AUTHED),
                },
            }
        },
        "/v1/gpus": {
            "get": {
                "operationId": "gpus",
                "responses": {
                    "200": _json(GpuList, "the pools a deployment can use, from Runpod's catalog (cached briefly)"),
                    **_errors(*_AUTHED, 502, 504),
                },
            }
        },
    }

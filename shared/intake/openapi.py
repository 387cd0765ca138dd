"""OpenAPI 3.1 document generated from the pydantic models the API really uses."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic.json_schema import models_json_schema

from shared.lifecycle import Status
from shared.models import (
    CreateDeploymentRequest,
    CreateDeploymentResponse,
    DeleteDeploymentResponse,
    DeploymentList,
    DeploymentView,
    ErrorResponse,
)

_REF = "#/components/schemas/{model}"
_MODELS = (
    CreateDeploymentRequest,
    CreateDeploymentResponse,
    DeleteDeploymentResponse,
    DeploymentList,
    DeploymentView,
    ErrorResponse,
)


def _ref(model: type) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(model: type, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "invalid input",
        401: "missing API key",
        404: "no such deployment (or not yours)",
        405: "method not allowed",
        409: "Idempotency-Key reused with another body",
        413: "body larger than 64 KiB",
        415: "body is not JSON",
        429: "rate limited (see Retry-After)",
        503: "a dependency is unavailable (see Retry-After)",
    }
    return {str(code): _json(ErrorResponse, text[code]) for code in codes}


_ID = {"name": "deployment_id", "in": "path", "required": True, "schema": {"type": "string"}}
_AUTHED = (401, 429, 503)


@lru_cache(maxsize=4)
def openapi_document(server_url: str) -> dict[str, Any]:
    _, schemas = models_json_schema([(m, "validation") for m in _MODELS], ref_template=_REF)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Visgate Deploy API", "version": "1.0.0"},
        "servers": [{"url": server_url}],
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "your Runpod API key"},
                "runpodKey": {"type": "apiKey", "in": "header", "name": "X-Runpod-Api-Key"},
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
                        "202": _json(CreateDeploymentResponse, "accepted"),
                        **_errors(400, 409, 413, 415, *_AUTHED),
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
                        {"name": "page_token", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {"200": _json(DeploymentList, "the caller's deployments"), **_errors(400, *_AUTHED)},
                },
            },
            "/v1/deployments/{deployment_id}": {
                "get": {
                    "operationId": "get_deployment",
                    "parameters": [_ID],
                    "responses": {"200": _json(DeploymentView, "the deployment"), **_errors(404, *_AUTHED)},
                },
                "delete": {
                    "operationId": "delete_deployment",
                    "parameters": [_ID],
                    "responses": {"202": _json(DeleteDeploymentResponse, "teardown started"), **_errors(404, *_AUTHED)},
                },
            },
            "/v1/deployments/{deployment_id}/stream": {
                "get": {
                    "operationId": "stream_deployment",
                    "parameters": [_ID],
                    "responses": {
                        "200": {
                            "description": "Server-Sent Events: one 'deployment' event per change, then 'end'",
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
                        "200": {
                            "description": "the deployment's event log (last lines, oldest first)",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **_errors(404, *_AUTHED),
                    },
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "security": [],
                    "responses": {"200": {"description": "Firestore answers"}},
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "security": [],
                    "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {}}}},
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "security": [],
                    "responses": {"200": {"description": "this document"}},
                }
            },
        },
    }

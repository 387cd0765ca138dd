"""OpenAPI 3.1 document generated from the pydantic models the API really uses and its route table
(shared.intake.api_routes): the paths are never written by hand."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic.json_schema import models_json_schema

from shared.intake.api_routes import PATH_PARAMETERS, ROUTES
from shared.intake.route_table import REF, models_of, openapi_paths

_DESCRIPTION = (
    "Every error has the shape of ErrorResponse. A path that matches no route (an id this API never issues included) "
    "is 404 `not_found`; a method a path does not serve is 405 `method_not_allowed` with an Allow header."
)


@lru_cache(maxsize=4)
def openapi_document(server_url: str) -> dict[str, Any]:
    _, schemas = models_json_schema([(m, "validation") for m in models_of(ROUTES)], ref_template=REF)
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
        "paths": openapi_paths(ROUTES, PATH_PARAMETERS),
    }

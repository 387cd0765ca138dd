"""How the API's routes are declared: one :class:`Route` per route (its rule, the handler's name, the request and
answer models, the errors it may answer, who may call it), from which the routing (:func:`url_map`), the dispatch
(the handler tables of the route classes, by ``endpoint``), the invoke-key scope (:func:`endpoints_for`) and the
OpenAPI paths (:func:`openapi_paths`) are all generated. The routes themselves are listed in
:mod:`shared.intake.api_routes`."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from werkzeug.routing import BaseConverter, Map, Rule

from shared.models import ErrorResponse

REF = "#/components/schemas/{model}"


class Callers(StrEnum):
    """Who may call a route."""

    OWNER = "owner"  # the tenant's Runpod key
    INVOKE = "invoke"  # the Runpod key, or an invoke key (vdk_...) of the route's own deployment
    ANYONE = "anyone"  # no auth
    METRICS = "metrics"  # the operator's METRICS_TOKEN


SECURITY: dict[Callers, list[dict[str, list[str]]]] = {
    Callers.OWNER: [{"bearer": []}, {"runpodKey": []}],
    Callers.INVOKE: [{"bearer": []}, {"runpodKey": []}, {"invokeKey": []}],
    Callers.ANYONE: [],
    Callers.METRICS: [{"metricsToken": []}],
}


@dataclass(frozen=True)
class Answer:
    """One success answer: a JSON model, or another content (``content``), and its headers."""

    status: int
    description: str
    model: type[BaseModel] | None = None
    content: Mapping[str, Any] | None = None
    headers: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Route:
    rule: str  # werkzeug rule: <id:deployment_id>, <job:job_id>, <key:key_id>, <delivery:delivery_id>
    method: str
    endpoint: str  # the handler's name and the operationId
    answers: tuple[Answer, ...]
    errors: tuple[int, ...] = ()
    callers: Callers = Callers.OWNER
    request: type[BaseModel] | None = None
    parameters: tuple[Mapping[str, Any], ...] = ()  # query and header parameters (path ones come from the rule)
    described: Mapping[int, str] = field(default_factory=dict)  # error descriptions particular to the route
    description: str | None = None


# What each error status means when a route does not say more.
ERROR_TEXT = {
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
}
_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer", "minimum": 1}}
}
ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "the scheme to use", "schema": {"type": "string"}}},
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}
_PATH_PARAMETER = re.compile(r"<(?:(?P<converter>\w+):)?(?P<name>\w+)>")


def url_map(routes: Iterable[Route], converters: Mapping[str, type[BaseConverter]]) -> Map:
    """The routing of ``routes`` (a method a path does not serve is werkzeug's 405, answered in the error shape)."""
    rules = [Rule(route.rule, methods=[route.method], endpoint=route.endpoint) for route in routes]
    return Map(rules, strict_slashes=False, converters=dict(converters))


def endpoints_for(routes: Iterable[Route], callers: Callers) -> frozenset[str]:
    """The endpoints ``callers`` may call."""
    return frozenset(route.endpoint for route in routes if route.callers is callers)


def openapi_paths(routes: Iterable[Route], path_parameters: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The OpenAPI ``paths`` of ``routes``; ``path_parameters`` gives each path parameter's spec by its name."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = _PATH_PARAMETER.sub(lambda match: "{" + match["name"] + "}", route.rule)
        names = [match["name"] for match in _PATH_PARAMETER.finditer(route.rule)]
        operation: dict[str, Any] = {"operationId": route.endpoint}
        if route.description:
            operation["description"] = route.description
        if route.callers is not Callers.OWNER:
            operation["security"] = SECURITY[route.callers]
        parameters = [dict(path_parameters[name]) for name in names] + [dict(p) for p in route.parameters]
        if parameters:
            operation["parameters"] = parameters
        if route.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(route.request)}},
            }
        operation["responses"] = {**{str(a.status): _answer(a) for a in route.answers}, **_errors(route)}
        paths.setdefault(path, {})[route.method.lower()] = operation
    return paths


def models_of(routes: Iterable[Route]) -> tuple[type[BaseModel], ...]:
    """Every model the routes take or answer, and the error shape, in the order they are declared."""
    found: dict[type[BaseModel], None] = {}
    for route in routes:
        if route.request is not None:
            found[route.request] = None
        found |= {answer.model: None for answer in route.answers if answer.model is not None}
    return (*found, ErrorResponse)


def ref(model: type) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _answer(answer: Answer) -> dict[str, Any]:
    spec: dict[str, Any] = {"description": answer.description}
    if answer.model is not None:
        spec["content"] = {"application/json": {"schema": ref(answer.model)}}
    elif answer.content is not None:
        spec["content"] = dict(answer.content)
    if answer.headers:
        spec["headers"] = dict(answer.headers)
    return spec


def _errors(route: Route) -> dict[str, Any]:
    responses = {}
    for code in route.errors:
        text = route.described.get(code, ERROR_TEXT[code])
        spec: dict[str, Any] = {"description": text, "content": {"application/json": {"schema": ref(ErrorResponse)}}}
        if code in ERROR_HEADERS:
            spec["headers"] = ERROR_HEADERS[code]
        responses[str(code)] = spec
    return responses

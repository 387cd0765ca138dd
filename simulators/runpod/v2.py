"""REST v2 request rules the simulator enforces: body schemas, semantic checks, and create / PATCH into a config.

The schemas below are the part of Runpod's ``CreateEndpointRequest`` / ``UpdateEndpointRequest`` the simulator
serves, written from Runpod's published OpenAPI document (``../shared/runpod/openapi-v2.json``; the simulator
must run without it, so it does not read it). They are JSON Schema 2020-12 with every object closed, so an unknown
field is refused by name. How a refusal is answered (all problem+json with ``errors[]``):

- 400: the body is not a JSON object, it carries unknown fields (``$.gpu: additional properties 'bogus' not
  allowed``), or it breaks a rule the document states in prose (``gpu`` xor ``cpu``, ``excludedTypes`` outside
  ``pools``, a CUDA set beside a floor, ``idleTimeout`` with REQUEST_COUNT scaling, ``min`` above ``max``).
- 422: otherwise valid JSON that fails the schema: a missing required field, a wrong type, a value outside an enum
  or a range (the document's "syntactically valid but failed validation").
"""

from __future__ import annotations

import copy
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from simulators.runpod.catalog import GPU_TYPES_BY_ID, POOLS_BY_ID
from simulators.runpod.model import EndpointConfig, ProblemError

_CUDA = {"type": "string", "pattern": r"^\d+\.\d+$"}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_CONTAINER: dict[str, Any] = {
    "image": {"type": "string"},
    "args": {"type": "string"},
    "disk": {"type": "integer", "minimum": 1},
    "env": {"type": "object", "additionalProperties": {"type": "string"}},
    "ports": _STRINGS,
    "registry": {"type": ["string", "null"]},
}
_WORKERS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "min": {"type": "integer", "minimum": 0},
        "max": {"type": "integer", "minimum": 0},
        "idleTimeout": {"type": "integer", "minimum": 1, "maximum": 3600},
    },
}
_SCALING = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"enum": ["QUEUE_DELAY", "REQUEST_COUNT"]}},
    "allOf": [
        {
            "if": {"properties": {"type": {"const": "QUEUE_DELAY"}}},
            "then": {
                "additionalProperties": False,
                "required": ["queueDelay"],
                "properties": {"type": True, "queueDelay": {"type": "number", "minimum": 0.5}},
            },
        },
        {
            "if": {"properties": {"type": {"const": "REQUEST_COUNT"}}},
            "then": {
                "additionalProperties": False,
                "required": ["requestCount"],
                "properties": {"type": True, "requestCount": {"type": "integer", "minimum": 1}},
            },
        },
    ],
}
_GPU_PROPERTIES: dict[str, Any] = {
    "pools": {"type": "array", "minItems": 1, "items": {"type": "string"}},
    "excludedTypes": {"type": "array", "uniqueItems": True, "items": {"type": "string", "pattern": r"^\s*[^-\s]"}},
    "count": {"type": "integer", "minimum": 1},
    "allowedCudaVersions": {"type": "array", "items": _CUDA},
}
_CREATE_GPU = {
    "type": "object",
    "additionalProperties": False,
    "required": ["pools"],
    "properties": {**_GPU_PROPERTIES, "minCudaVersion": _CUDA},
}
_UPDATE_GPU = {
    "type": "object",
    "additionalProperties": False,
    "dependentRequired": {"excludedTypes": ["pools"]},
    "properties": {**_GPU_PROPERTIES, "minCudaVersion": {"type": "string", "pattern": r"^$|^\d+\.\d+$"}},
}
_COMMON: dict[str, Any] = {
    **_CONTAINER,
    "name": {"type": "string", "minLength": 1},
    "cpu": {"type": "array", "minItems": 1},
    "dataCenterIds": _STRINGS,
    "networkVolumes": _STRINGS,
    "flashboot": {"enum": ["OFF", "FLASHBOOT", "PRIORITY_FLASHBOOT"]},
    "timeout": {"type": "integer"},
    "workers": _WORKERS,
    "scaling": _SCALING,
}
CREATE_ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "type", "scaling"],
    "properties": {
        **_COMMON,
        "type": {"enum": ["QUEUE", "LOAD_BALANCER"]},
        "gpu": _CREATE_GPU,
        "templateId": {"type": "string", "minLength": 1},
    },
    "if": {"not": {"required": ["templateId"]}},
    "then": {"required": ["image"]},
}
UPDATE_ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {**_COMMON, "gpu": _UPDATE_GPU, "templateId": {"type": "string"}},
}
_VALIDATORS = {
    "create": Draft202012Validator(CREATE_ENDPOINT),
    "update": Draft202012Validator(UPDATE_ENDPOINT),
}


def _where(error: ValidationError) -> str:
    return "$" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path)


def _message(error: ValidationError) -> str:
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        extra = ", ".join(f"'{name}'" for name in sorted(set(error.instance) - known))
        return f"{_where(error)}: additional properties {extra} not allowed"
    return f"{_where(error)}: {error.message}"


def _leaf_errors(errors: list[ValidationError]) -> list[ValidationError]:
    """Flatten if/then and allOf wrappers, so each message names the field that is wrong."""
    leaves: list[ValidationError] = []
    for error in errors:
        if error.context:
            leaves.extend(_leaf_errors(list(error.context)))
        else:
            leaves.append(error)
    return leaves


def validate_body(kind: str, body: Any) -> dict[str, Any]:
    """Check a create (``kind="create"``) or PATCH (``"update"``) body; raise ProblemError 400/422 if refused."""
    if not isinstance(body, dict):
        raise ProblemError(400, "request body must be a JSON object", ["$: expected a JSON object"])
    errors = _leaf_errors(list(_VALIDATORS[kind].iter_errors(body)))
    if not errors:
        return body
    messages = sorted({_message(error) for error in errors})
    if any(error.validator == "additionalProperties" for error in errors):
        raise ProblemError(400, "request has unknown fields", messages)
    raise ProblemError(422, "Request validation failed.", messages)


def _refuse(*messages: str) -> ProblemError:
    return ProblemError(400, messages[0].split(": ", 1)[-1], list(messages))


def _check_rules(body: dict[str, Any]) -> None:
    """What the document says in prose and the simulator does not simulate (all 400)."""
    if body.get("type") == "LOAD_BALANCER":
        raise _refuse("$.type: the simulator serves QUEUE endpoints only (LOAD_BALANCER is not simulated)")
    if "cpu" in body:
        raise _refuse("$.cpu: CPU endpoints are not simulated; send gpu")
    if body.get("templateId"):
        # The simulator keeps no templates: every id is unknown, as an inaccessible one is on Runpod.
        raise ProblemError(404, f"template {body['templateId']} not found")
    gpu = body.get("gpu") or {}
    if gpu.get("allowedCudaVersions") and gpu.get("minCudaVersion"):
        raise _refuse("$.gpu: allowedCudaVersions and minCudaVersion are mutually exclusive")


def _check_config(config: EndpointConfig, body: dict[str, Any]) -> None:
    """Rules on the resulting configuration (after a PATCH merge too)."""
    if config.scaler_type == "REQUEST_COUNT" and "idleTimeout" in (body.get("workers") or {}):
        raise _refuse("$.workers.idleTimeout: not applicable with REQUEST_COUNT scaling on a queue-based endpoint")
    unknown = [pool for pool in config.pools if pool not in POOLS_BY_ID]
    if unknown:
        raise _refuse(*(f"$.gpu.pools: unknown serverless GPU pool '{pool}'" for pool in unknown))
    for gpu_type in config.excluded_types:
        known = GPU_TYPES_BY_ID.get(gpu_type)
        if known is None or known.pool_id not in config.pools:
            raise _refuse(f"$.gpu.excludedTypes: '{gpu_type}' is not a GPU type in one of pools")
    if not any(config.gpu_type_for(pool) for pool in config.pools):
        raise _refuse("$.gpu.excludedTypes: the selection leaves no GPU type")
    if config.workers_min > config.workers_max:
        raise _refuse("$.workers: min must not be greater than max")
    if config.timeout_ms < 1:
        raise _refuse("$.timeout: must be a positive number of milliseconds")


def _apply(config: EndpointConfig, body: dict[str, Any]) -> None:
    """Set what ``body`` carries on ``config`` (shared by create and PATCH)."""
    simple = {
        "name": "name",
        "image": "image",
        "args": "args",
        "disk": "disk",
        "ports": "ports",
        "env": "env",
        "registry": "registry",
        "dataCenterIds": "data_center_ids",
        "networkVolumes": "network_volumes",
        "timeout": "timeout_ms",
        "flashboot": "flashboot",
    }
    for key, attr in simple.items():
        if key in body:
            setattr(config, attr, copy.deepcopy(body[key]))
    gpu = body.get("gpu")
    if gpu is not None:
        if "pools" in gpu:
            # pools and excludedTypes are one selection: sending pools without excludedTypes clears them.
            config.pools = list(gpu["pools"])
            config.excluded_types = [t.strip() for t in gpu.get("excludedTypes", [])]
        if "count" in gpu:
            config.gpu_count = gpu["count"]
        if "allowedCudaVersions" in gpu:
            config.allowed_cuda_versions = list(gpu["allowedCudaVersions"])
        if "minCudaVersion" in gpu:
            config.min_cuda_version = gpu["minCudaVersion"] or None
    workers = body.get("workers") or {}
    config.workers_min = workers.get("min", config.workers_min)
    config.workers_max = workers.get("max", config.workers_max)
    config.idle_timeout = workers.get("idleTimeout", config.idle_timeout)
    scaling = body.get("scaling")
    if scaling is not None:
        config.scaler_type = scaling["type"]
        config.scaler_value = scaling.get("queueDelay", scaling.get("requestCount"))


# What a new release is made of: the container and where it may run (workers, scaling, timeout and name apply at once).
_RELEASE_FIELDS = (
    "image",
    "args",
    "disk",
    "ports",
    "env",
    "registry",
    "pools",
    "excluded_types",
    "gpu_count",
    "allowed_cuda_versions",
    "min_cuda_version",
    "data_center_ids",
    "network_volumes",
    "flashboot",
)


def config_from_create(body: Any) -> EndpointConfig:
    """The configuration a ``POST /v2/serverless`` body asks for, or ProblemError."""
    body = validate_body("create", body)
    _check_rules(body)
    if "gpu" not in body:
        raise _refuse("$: exactly one of gpu or cpu is required")
    config = EndpointConfig(name=body["name"], image=body["image"], pools=[])
    _apply(config, body)
    _check_config(config, body)
    return config


def config_from_patch(current: EndpointConfig, body: Any) -> tuple[EndpointConfig, bool]:
    """The configuration after a PATCH, and whether it is a new release (container or placement changed)."""
    body = validate_body("update", body)
    _check_rules(body)
    config = copy.deepcopy(current)
    _apply(config, body)
    _check_config(config, body)
    new_release = any(getattr(config, f) != getattr(current, f) for f in _RELEASE_FIELDS)
    return config, new_release

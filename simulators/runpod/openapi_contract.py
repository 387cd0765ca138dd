"""Check requests and answers against Runpod's own REST v2 OpenAPI document (the contract both sides meet).

The document is Runpod's published OpenAPI 3.1 file (runpod/docs ``api-reference-v2/openapi.json``). It is not part
of this repository: CI provides it at ``<repo>/../shared/runpod/openapi-v2.json``; ``RUNPOD_OPENAPI_V2`` overrides
the path. OpenAPI 3.1 schemas are JSON Schema 2020-12, so bodies are validated with ``jsonschema``'s
``Draft202012Validator``, ``$ref`` resolved within the document.

Usage::

    from simulators.runpod import openapi_contract as contract

    contract.validate_request("POST", "/v2/serverless", body)               # raises ContractError
    contract.validate_response("GET", "/v2/serverless/{id}", 200, body)     # idem
    contract.path_template("/v2/serverless/abc/workers")                    # "/v2/serverless/{id}/workers"
    problems = contract.request_errors("PATCH", "/v2/serverless/{id}", body)  # list of messages, [] if valid

In pytest, ``tests.simulators.conftest`` has a ``runpod_contract`` fixture that skips (with the reason from
:func:`missing_reason`) when the document is absent.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ENV_VAR = "RUNPOD_OPENAPI_V2"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PATH = REPO_ROOT.parent / "shared" / "runpod" / "openapi-v2.json"
SOURCE = (
    "Runpod's REST v2 OpenAPI document (runpod/docs api-reference-v2/openapi.json), which CI provides at "
    f"<repo>/../shared/runpod/openapi-v2.json (set {ENV_VAR} to use another path); it is not in this repository"
)
_DOC_URI = "urn:runpod:openapi-v2"
_METHODS = ("get", "put", "post", "delete", "patch")


class ContractError(AssertionError):
    """A request or answer that Runpod's OpenAPI document does not allow."""


def document_path() -> Path:
    """Where the document is read from: ``$RUNPOD_OPENAPI_V2``, else ``<repo>/../shared/runpod/openapi-v2.json``."""
    override = os.environ.get(ENV_VAR)
    return Path(override) if override else DEFAULT_PATH


def missing_reason() -> str | None:
    """Why the contract cannot be checked here (a sentence naming where the document comes from), or None."""
    path = document_path()
    if path.is_file():
        return None
    return f"{path} not found: the contract check needs {SOURCE}"


@dataclass(frozen=True)
class Contract:
    """One loaded OpenAPI document."""

    document: dict[str, Any]
    registry: Registry

    @classmethod
    def load(cls, path: Path | None = None) -> Contract:
        """Read and index a document (default: :func:`document_path`)."""
        document = json.loads((path or document_path()).read_text())
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        return cls(document=document, registry=Registry().with_resource(_DOC_URI, resource))

    def operation(self, method: str, path_template: str) -> dict[str, Any]:
        """The operation object for ``method`` on ``path_template`` (e.g. ``/v2/serverless/{id}``)."""
        item = self.document["paths"].get(path_template)
        operation = (item or {}).get(method.lower())
        if operation is None:
            raise ContractError(f"{method.upper()} {path_template} is not an operation of the document")
        return dict(operation)

    def path_template(self, path: str) -> str:
        """The document's path template a concrete path matches (literal segments win over ``{params}``)."""
        path = path.split("?", 1)[0].rstrip("/") or "/"
        matches = []
        for template in self.document["paths"]:
            pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
            if re.match(pattern, path):
                matches.append(template)
        if not matches:
            raise ContractError(f"no path of the document matches {path}")
        return max(matches, key=lambda t: sum(1 for part in t.split("/") if part and not part.startswith("{")))

    def request_errors(
        self, method: str, path_template: str, body: Any, query: str | dict[str, Any] | None = None
    ) -> list[str]:
        """Every way a request body (and query string) breaks the operation's declared request; [] if none."""
        operation = self.operation(method, path_template)
        errors = self._query_errors(operation, path_template, query)
        request_body = operation.get("requestBody")
        if request_body is None:
            if body is not None:
                errors.append(f"{method.upper()} {path_template} takes no request body")
            return errors
        if body is None:
            if request_body.get("required"):
                errors.append("request body is required")
            return errors
        media = request_body.get("content", {}).get("application/json")
        if media is None:
            return [*errors, "the operation takes no application/json body"]
        return errors + self._schema_errors(media.get("schema", {}), body)

    def response_errors(
        self, method: str, path_template: str, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> list[str]:
        """Every way an answer breaks what the operation declares for ``status``; [] if none."""
        operation = self.operation(method, path_template)
        responses = operation.get("responses", {})
        declared = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX") or responses.get("default")
        if declared is None:
            return [f"status {status} is not declared for {method.upper()} {path_template}"]
        declared = self._deref(declared)
        errors: list[str] = []
        content = declared.get("content")
        if not content:
            if body not in (None, b"", ""):
                errors.append(f"status {status} declares no body, got {body!r:.80}")
        elif body is None:
            errors.append(f"status {status} declares a body, got none")
        else:
            media = content.get(_media_type(headers)) if headers else None
            if headers and media is None:
                errors.append(f"content type {_media_type(headers)!r} is not declared for status {status}")
            media = media or next(iter(content.values()))
            errors += self._schema_errors(media.get("schema", {}), body)
        for name, header in declared.get("headers", {}).items():
            value = (headers or {}).get(name)
            schema = self._deref(header).get("schema", {})
            if value is not None and schema.get("type") == "integer" and not value.strip().isdigit():
                errors.append(f"header {name}: {value!r} is not an integer")
        return errors

    def validate_request(
        self, method: str, path_template: str, body: Any, query: str | dict[str, Any] | None = None
    ) -> None:
        """Raise ContractError unless the request is one the document allows."""
        errors = self.request_errors(method, path_template, body, query)
        if errors:
            raise ContractError(f"{method.upper()} {path_template} request: " + "; ".join(errors))

    def validate_response(
        self, method: str, path_template: str, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> None:
        """Raise ContractError unless the answer is one the document declares."""
        errors = self.response_errors(method, path_template, status, body, headers)
        if errors:
            raise ContractError(f"{method.upper()} {path_template} {status} answer: " + "; ".join(errors))

    # ------------------------------------------------------------------ helpers

    def _deref(self, node: dict[str, Any]) -> dict[str, Any]:
        """Follow a local ``$ref`` (responses, headers, parameters) to its target."""
        while "$ref" in node:
            target: Any = self.document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            node = target
        return node

    def _schema_errors(self, schema: dict[str, Any], instance: Any) -> list[str]:
        wrapped = {"$schema": "https://json-schema.org/draft/2020-12/schema", **_rebase(schema)}
        validator = Draft202012Validator(
            wrapped, registry=self.registry, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
        return [f"{_json_path(e.absolute_path)}: {e.message}" for e in errors]

    def _query_errors(
        self, operation: dict[str, Any], path_template: str, query: str | dict[str, Any] | None
    ) -> list[str]:
        if query is None:
            return []
        given = {k: v[-1] for k, v in parse_qs(query).items()} if isinstance(query, str) else dict(query)
        parameters = [self._deref(p) for p in self.document["paths"][path_template].get("parameters", [])]
        parameters += [self._deref(p) for p in operation.get("parameters", [])]
        errors = []
        for parameter in (p for p in parameters if p.get("in") == "query"):
            name = parameter["name"]
            if name not in given:
                if parameter.get("required"):
                    errors.append(f"query parameter {name} is required")
                continue
            schema = self._deref(parameter.get("schema", {}))
            errors += [f"query {name}{e[1:]}" for e in self._schema_errors(schema, _coerce(given[name], schema))]
        return errors


def _rebase(node: Any) -> Any:
    """Point the document's local ``#/...`` refs at the registered document."""
    if isinstance(node, dict):
        return {k: (f"{_DOC_URI}{v}" if k == "$ref" and v.startswith("#") else _rebase(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_rebase(item) for item in node]
    return node


def _coerce(raw: Any, schema: dict[str, Any]) -> Any:
    """A query string value as the parameter's schema types it (``style: form, explode: false`` arrays)."""
    if not isinstance(raw, str):
        return raw
    kind = schema.get("type")
    if kind == "array":
        return [v for v in raw.split(",") if v]
    if kind == "integer" and re.fullmatch(r"-?\d+", raw):
        return int(raw)
    return raw


def _media_type(headers: dict[str, str]) -> str:
    value = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    return value.split(";", 1)[0].strip()


def _json_path(parts: Any) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


@cache
def default_contract() -> Contract:
    """The document at :func:`document_path`, loaded once (FileNotFoundError if absent)."""
    return Contract.load()


def path_template(path: str) -> str:
    """:meth:`Contract.path_template` on the default document."""
    return default_contract().path_template(path)


def request_errors(method: str, path_template: str, body: Any, query: str | dict[str, Any] | None = None) -> list[str]:
    """:meth:`Contract.request_errors` on the default document."""
    return default_contract().request_errors(method, path_template, body, query)


def response_errors(
    method: str, path_template: str, status: int, body: Any, headers: dict[str, str] | None = None
) -> list[str]:
    """:meth:`Contract.response_errors` on the default document."""
    return default_contract().response_errors(method, path_template, status, body, headers)


def validate_request(method: str, path_template: str, body: Any, query: str | dict[str, Any] | None = None) -> None:
    """:meth:`Contract.validate_request` on the default document."""
    default_contract().validate_request(method, path_template, body, query)


def validate_response(
    method: str, path_template: str, status: int, body: Any, headers: dict[str, str] | None = None
) -> None:
    """:meth:`Contract.validate_response` on the default document."""
    default_contract().validate_response(method, path_template, status, body, headers)

"""A small Runpod client over ``requests``: the GraphQL control plane and the ``/v2`` data plane.

Not the runpod SDK: importing it costs ~1.3 s of cold start, and it interpolates values (env included) into
GraphQL documents unescaped. Here every value is a GraphQL variable.
"""

from __future__ import annotations

from typing import Any

import requests
from pydantic import BaseModel, ConfigDict, Field

from shared.runpod import documents
from shared.runpod.errors import (
    RunpodAuthError,
    RunpodNotFoundError,
    RunpodRejectedError,
    RunpodUnavailableError,
    classify_graphql_error,
)

_AUTH_STATUSES = (401, 403)


class _RunpodModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class TemplateSpec(_RunpodModel):
    """``SaveTemplateInput`` for a serverless template."""

    name: str
    image_name: str = Field(alias="imageName")
    env: dict[str, str]
    container_disk_in_gb: int = Field(alias="containerDiskInGb")

    def variables(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "imageName": self.image_name,
            "dockerArgs": "",
            "containerDiskInGb": self.container_disk_in_gb,
            "volumeInGb": 0,
            "ports": "",
            "env": [{"key": key, "value": value} for key, value in self.env.items()],
            "isServerless": True,
            "startSsh": False,
            "isPublic": False,
            "readme": "",
        }


class Template(_RunpodModel):
    id: str
    name: str


class EndpointSpec(_RunpodModel):
    """``EndpointInput``. ``saveEndpoint`` replaces the whole config, so every update sends all of it."""

    name: str
    template_id: str = Field(alias="templateId")
    gpu_ids: str = Field(alias="gpuIds")
    workers_min: int = Field(alias="workersMin")
    workers_max: int = Field(alias="workersMax")
    idle_timeout: int = Field(alias="idleTimeout")
    scaler_type: str = Field(alias="scalerType")
    scaler_value: int = Field(alias="scalerValue")
    flashboot: bool = True
    execution_timeout_ms: int = Field(600_000, alias="executionTimeoutMs")

    def variables(self, endpoint_id: str | None) -> dict[str, Any]:
        values: dict[str, Any] = {
            "name": self.name,
            "templateId": self.template_id,
            "gpuIds": self.gpu_ids,
            "gpuCount": 1,
            "networkVolumeId": "",
            "locations": "",
            "idleTimeout": self.idle_timeout,
            "scalerType": self.scaler_type,
            "scalerValue": self.scaler_value,
            "workersMin": self.workers_min,
            "workersMax": self.workers_max,
            "executionTimeoutMs": self.execution_timeout_ms,
            "flashBootType": "FLASHBOOT" if self.flashboot else "OFF",
        }
        if endpoint_id:
            values["id"] = endpoint_id
        return values


class Endpoint(_RunpodModel):
    id: str
    name: str
    template_id: str = Field(alias="templateId")
    gpu_ids: str = Field("", alias="gpuIds")
    workers_min: int = Field(0, alias="workersMin")
    workers_max: int = Field(0, alias="workersMax")
    idle_timeout: int = Field(5, alias="idleTimeout")
    scaler_type: str = Field("QUEUE_DELAY", alias="scalerType")
    scaler_value: int = Field(4, alias="scalerValue")
    flash_boot_type: str | None = Field(None, alias="flashBootType")
    execution_timeout_ms: int = Field(600_000, alias="executionTimeoutMs")

    def as_spec(self) -> EndpointSpec:
        """The endpoint's current config, to change one thing and send it all back."""
        return EndpointSpec(
            name=self.name,
            templateId=self.template_id,
            gpuIds=self.gpu_ids,
            workersMin=self.workers_min,
            workersMax=self.workers_max,
            idleTimeout=self.idle_timeout,
            scalerType=self.scaler_type,
            scalerValue=self.scaler_value,
            flashboot=self.flash_boot_type == "FLASHBOOT",
            executionTimeoutMs=self.execution_timeout_ms,
        )


class GpuType(_RunpodModel):
    id: str
    display_name: str = Field("", alias="displayName")
    memory_in_gb: int = Field(alias="memoryInGb")
    secure_cloud: bool | None = Field(None, alias="secureCloud")
    community_cloud: bool | None = Field(None, alias="communityCloud")


class WorkerCounts(_RunpodModel):
    idle: int = 0
    initializing: int = 0
    ready: int = 0
    running: int = 0
    throttled: int = 0
    unhealthy: int = 0

    @property
    def up(self) -> int:
        """Workers that hold a GPU and are starting or serving."""
        return self.idle + self.initializing + self.ready + self.running


class JobCounts(_RunpodModel):
    completed: int = 0
    failed: int = 0
    in_progress: int = Field(0, alias="inProgress")
    in_queue: int = Field(0, alias="inQueue")
    retried: int = 0


class Health(_RunpodModel):
    jobs: JobCounts = JobCounts.model_validate({})
    workers: WorkerCounts = WorkerCounts()


class Job(_RunpodModel):
    id: str
    status: str
    output: Any = None
    error: Any = None


class RunpodClient:
    """Runpod on behalf of one account (one API key). Cheap to make: the HTTP session is shared."""

    def __init__(self, session: requests.Session, api_base: str, endpoint_base: str, api_key: str, timeout_s: float):
        self._session = session
        self._graphql_url = f"{api_base.rstrip('/')}/graphql"
        self._v2 = f"{endpoint_base.rstrip('/')}/v2"
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._timeout = timeout_s

    def endpoint_url(self, endpoint_id: str) -> str:
        """The base URL users call the endpoint at."""
        return f"{self._v2}/{endpoint_id}"

    # --- control plane ------------------------------------------------------------------------------------------

    def save_template(self, spec: TemplateSpec) -> Template:
        """Create a template. Raises RunpodNameTakenError when one of that name exists."""
        data = self._graphql(documents.SAVE_TEMPLATE, {"input": spec.variables()})
        return Template.model_validate(data["saveTemplate"])

    def delete_template(self, name: str) -> None:
        """Delete a template by name. Raises RunpodNotFoundError when there is none."""
        self._graphql(documents.DELETE_TEMPLATE, {"templateName": name})

    def save_endpoint(self, spec: EndpointSpec, endpoint_id: str | None = None) -> Endpoint:
        """Create an endpoint, or replace the whole config of ``endpoint_id``."""
        data = self._graphql(documents.SAVE_ENDPOINT, {"input": spec.variables(endpoint_id)})
        return Endpoint.model_validate(data["saveEndpoint"])

    def delete_endpoint(self, endpoint_id: str) -> None:
        """Delete an endpoint (Runpod requires workersMin = workersMax = 0 first)."""
        self._graphql(documents.DELETE_ENDPOINT, {"id": endpoint_id})

    def resources(self) -> tuple[list[Endpoint], list[Template]]:
        """Every endpoint and template of the account."""
        myself = self._graphql(documents.MY_RESOURCES, {})["myself"] or {}
        endpoints = [Endpoint.model_validate(e) for e in myself.get("endpoints") or []]
        templates = [Template.model_validate(t) for t in myself.get("podTemplates") or []]
        return endpoints, templates

    def gpu_types(self) -> list[GpuType]:
        return [GpuType.model_validate(g) for g in self._graphql(documents.GPU_TYPES, {})["gpuTypes"] or []]

    # --- data plane ---------------------------------------------------------------------------------------------

    def run(self, endpoint_id: str, job_input: dict[str, Any]) -> Job:
        """Queue a job (``/run``)."""
        return Job.model_validate(self._data("POST", f"{endpoint_id}/run", {"input": job_input}))

    def health(self, endpoint_id: str) -> Health:
        return Health.model_validate(self._data("GET", f"{endpoint_id}/health"))

    # --- transport ----------------------------------------------------------------------------------------------

    def _graphql(self, document: str, variables: dict[str, Any]) -> dict[str, Any]:
        response = self._send("POST", self._graphql_url, {"query": document, "variables": variables})
        try:
            body = response.json()
        except ValueError as exc:
            raise RunpodUnavailableError(f"Runpod GraphQL answered {response.status_code} without JSON") from exc
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors:
            raise classify_graphql_error(str(errors[0].get("message", "")))
        if response.status_code >= 400 or not isinstance(body.get("data"), dict):
            raise RunpodRejectedError(f"Runpod GraphQL answered {response.status_code}")
        return dict(body["data"])

    def _data(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self._send(method, f"{self._v2}/{path}", payload)
        if response.status_code == 404:
            raise RunpodNotFoundError(f"Runpod has no {path.split('/', 1)[0]}")
        if response.status_code >= 400:
            raise RunpodRejectedError(f"Runpod {path.split('/')[1]} answered {response.status_code}")
        try:
            return dict(response.json())
        except ValueError as exc:
            raise RunpodUnavailableError(f"Runpod answered {response.status_code} without JSON") from exc

    def _send(self, method: str, url: str, payload: dict[str, Any] | None) -> requests.Response:
        try:
            response = self._session.request(method, url, json=payload, headers=self._headers, timeout=self._timeout)
        except requests.RequestException as exc:
            # The exception text holds only the URL, never the headers (the key).
            raise RunpodUnavailableError(f"Runpod unreachable: {type(exc).__name__}") from exc
        if response.status_code in _AUTH_STATUSES:
            raise RunpodAuthError()
        if response.status_code == 429 or response.status_code >= 500:
            raise RunpodUnavailableError(f"Runpod answered {response.status_code}")
        return response


class RunpodConnector:
    """Built once per instance: one pooled HTTP session and the base URLs; hands out per-key clients."""

    def __init__(self, api_base: str, endpoint_base: str, timeout_s: float, session: requests.Session | None = None):
        self._session = session or requests.Session()
        self._api_base = api_base
        self._endpoint_base = endpoint_base
        self._timeout = timeout_s

    def client(self, api_key: str) -> RunpodClient:
        return RunpodClient(self._session, self._api_base, self._endpoint_base, api_key, self._timeout)

"""The entry point: :class:`Client` talks to the Visgate API (deployments and their jobs) with your Runpod API key,
or with a deployment's invoke key."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import requests

from visgate_client._http import DEFAULT_TIMEOUT, Transport, new_session
from visgate_client.deployment import Deployment
from visgate_client.errors import VisgateError
from visgate_client.models import GpuPool, UsageReport

API_URL_ENV = "VISGATE_API_URL"
API_KEY_ENV = "RUNPOD_API_KEY"
# Friendlier names for a few request fields; every other keyword is sent as the API's own field name.
OPTION_ALIASES = {"webhook_url": "user_webhook_url", "cache": "cache_scope", "model": "hf_model_id"}


class Client:
    """A client of the Visgate API.

    Args:
        api_url: the API's base URL (``.../intake`` locally); defaults to ``$VISGATE_API_URL``.
        api_key: your Runpod API key (it names your tenant), or a deployment's invoke key (``vdk_...``: the run,
            runsync, jobs and get calls of that one deployment); defaults to ``$RUNPOD_API_KEY``.
        timeout: ``(connect, read)`` seconds for every call but the event stream and ``runsync``.
        max_retries: retries of calls that are safe to repeat (GET, DELETE, POST with an Idempotency-Key).
        session: a ``requests.Session`` to use (connection pooling, proxies); a pooled one is made otherwise.

    ``transport`` is what every call of this client, of its deployments and of their jobs goes through (the URL, the
    key, the timeouts and the retries): ``Deployment(client.transport, {"deployment_id": ...})`` is a deployment of
    this client known by its id alone.
    """

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        session: requests.Session | None = None,
    ) -> None:
        url = api_url or os.environ.get(API_URL_ENV)
        key = api_key or os.environ.get(API_KEY_ENV)
        if not url:
            raise VisgateError(f"no API URL: pass api_url or set {API_URL_ENV}")
        if not key:
            raise VisgateError(f"no API key: pass api_key or set {API_KEY_ENV} (your Runpod API key)")
        self.api_url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {key}", "User-Agent": "visgate-client", "Accept": "application/json"}
        self.transport = Transport(session or new_session(), self.api_url, headers, timeout, max_retries)

    def close(self) -> None:
        self.transport.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _get_json(self, path: str, **params: Any) -> dict[str, Any]:
        return self.transport.get_json(path, **params)

    def deploy(self, model: str, *, idempotency_key: str | None = None, **options: Any) -> Deployment:
        """Ask for a deployment of Hub model ``model``; answered at once (``validating``): call ``.wait()``.

        ``options`` are the request fields of ``POST /v1/deployments`` (``revision``, ``gpu_tier``, ``cache_scope``,
        ``hf_token``, ``user_webhook_url`` (or ``webhook_url``), ``ttl_minutes``, ``workers_min``, ``workers_max``,
        ``idle_timeout_seconds``, the private cache's ``user_s3_url`` and keys); None values are left out. Every
        call sends an Idempotency-Key (``idempotency_key``, or a fresh one), so its retries never deploy twice.
        """
        body: dict[str, Any] = {"hf_model_id": model}
        for name, value in options.items():
            if value is not None:
                body[OPTION_ALIASES.get(name, name)] = value
        key = idempotency_key or uuid.uuid4().hex
        response = self.transport.request("POST", "/v1/deployments", json=body, headers={"Idempotency-Key": key})
        return Deployment(self.transport, {"hf_model_id": model, **response.json()})  # no token kept in the view

    def get(self, deployment_id: str) -> Deployment:
        """The deployment's current view (``GET /v1/deployments/{id}``)."""
        return Deployment(self.transport, self._get_json(f"/v1/deployments/{deployment_id}"))

    def deployments(self, status: str | None = None, page_size: int | None = None) -> Iterator[Deployment]:
        """Every deployment of your key (optionally only those in ``status``), newest first, page after page."""
        token: str | None = None
        while True:
            page = self._get_json("/v1/deployments", status=status, limit=page_size, page_token=token)
            for view in page.get("deployments", []):
                yield Deployment(self.transport, view)
            token = page.get("next_page_token")
            if not token:
                return

    def counts_by_status(self) -> dict[str, int]:
        """How many deployments your key has in each status."""
        return dict(self._get_json("/v1/deployments", limit=1).get("counts_by_status", {}))

    def usage(self, from_day: date | None = None, to_day: date | None = None) -> UsageReport:
        """Your jobs' usage per deployment and in total over UTC days ``from_day``..``to_day`` (``GET /v1/usage``;
        the API's default is the last 30 days). Costs are estimates: Runpod's bill is the truth."""
        days = {"from": from_day.isoformat() if from_day else None, "to": to_day.isoformat() if to_day else None}
        return UsageReport.from_json(self._get_json("/v1/usage", **days))

    def gpus(self) -> list[GpuPool]:
        """The GPU pools a deployment can use, smallest first: VRAM, serverless price, availability
        (``GET /v1/gpus``, from Runpod's catalog)."""
        return [GpuPool.from_json(item) for item in self._get_json("/v1/gpus").get("pools", [])]

    def health(self) -> dict[str, Any]:
        """``GET /health`` (no key needed)."""
        return self._get_json("/health")

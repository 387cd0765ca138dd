"""The intake HTTP API: routing and the mapping of outcomes to responses. Steps live in shared.intake.steps."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from flask import Request, Response
from google.cloud import firestore
from pydantic import ValidationError
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import BaseConverter

from shared import logging as slog
from shared.document import Deployment
from shared.errors import ApiError
from shared.http import error_response, failure_error, json_response, read_json_body, request_id, validation_error
from shared.intake import api_routes, steps
from shared.intake.api_routes import PROMETHEUS_CONTENT_TYPE
from shared.intake.auth import Caller, authenticate
from shared.intake.keys import client_address
from shared.intake.lifecycle_routes import LifecycleRoutes
from shared.intake.metrics import (
    HEALTH_CHECK_S,
    METRICS_CACHE_S,
    RequestCounters,
    TimedCache,
    check_metrics_token,
)
from shared.intake.notify import NotifyRoutes
from shared.intake.openapi import openapi_document
from shared.intake.ratelimit import check_rate_limit, count_request, current_window
from shared.intake.route_table import url_map
from shared.intake.stream import deployment_events
from shared.jobs.account_routes import AccountRoutes
from shared.jobs.invoke_keys import KEY_ID_PATTERN, is_invoke_key
from shared.jobs.records import JOB_ID_PATTERN
from shared.jobs.routes import JobRoutes
from shared.models import DeploymentLogs, LogLine, UpdateDeploymentRequest
from shared.store import DEPLOYMENT_ID_PATTERN

logger = logging.getLogger(__name__)


class DeploymentIdConverter(BaseConverter):
    """Only ids this API issues: any other id is no route, answered before Firestore sees it (it refuses some)."""

    regex = DEPLOYMENT_ID_PATTERN


class JobIdConverter(BaseConverter):
    regex = JOB_ID_PATTERN


class KeyIdConverter(BaseConverter):
    regex = KEY_ID_PATTERN


ROUTES = url_map(api_routes.ROUTES, {"id": DeploymentIdConverter, "job": JobIdConverter, "key": KeyIdConverter})
STREAM_MAX_SECONDS = 300.0
# The routes that ask Runpod about the caller's key again when its verdict is older than KEY_REVERIFY_SENSITIVE_S.
SENSITIVE_ROUTES = frozenset({"create_deployment", "create_invoke_key", "client_token", "rotate_webhook_secret"})


class IntakeApi:
    def __init__(
        self,
        deps: steps.IntakeDeps,
        db: firestore.Client,
        counters: RequestCounters,
        *,
        lifecycle: LifecycleRoutes,
        jobs: JobRoutes,
        notify: NotifyRoutes,
        stream_max_s: float = STREAM_MAX_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """The route classes come built, with their clients, from the composition root (shared.wiring.intake)."""
        self._deps = deps
        self._db = db
        self._counters = counters
        self._stream_max_s = stream_max_s
        self._clock = clock  # the rate windows' clock (injected in tests)
        self._lifecycle = lifecycle
        self._health = TimedCache(HEALTH_CHECK_S, deps.store.ping)
        self._metrics = TimedCache(METRICS_CACHE_S, lambda: counters.render(deps.store.counts_by_status(None)))
        self._handlers: dict[str, Callable[..., Response]] = {
            "create_deployment": self._create,
            "list_deployments": self._list,
            "get_deployment": self._get,
            "delete_deployment": self._delete,
            "update_deployment": self._update,
            "stream_deployment": self._stream,
            "deployment_logs": self._logs,
            # Stop and start (shared.intake.lifecycle_routes).
            "stop_deployment": lambda _r, caller, deployment_id: json_response(
                self._lifecycle.stop(caller, deployment_id), 202
            ),
            "start_deployment": lambda _r, caller, deployment_id: json_response(
                self._lifecycle.start(caller, deployment_id), 202
            ),
        }
        self._handlers |= notify.handlers()
        self._jobs = jobs
        self._handlers.update(self._jobs.handlers())
        self._handlers.update(AccountRoutes(self._jobs.deps).handlers())

    def __call__(self, request: Request) -> Response:
        rid = request_id(request)
        route = "unmatched"
        with slog.bind(request_id=rid, step="intake"):
            try:
                adapter = ROUTES.bind("", path_info=request.path)
                endpoint, args = adapter.match(request.path, method=request.method)
                route = str(endpoint)
                response = self._dispatch(request, route, args)
            except NotFound:
                response = error_response(ApiError(404, "not_found", f"no route for {request.path}"), rid)
            except MethodNotAllowed as exc:
                allowed = ", ".join(sorted(exc.valid_methods or []))
                err = ApiError(
                    405, "method_not_allowed", f"{request.method} is not allowed here", headers={"Allow": allowed}
                )
                response = error_response(err, rid)
            except ApiError as exc:
                response = error_response(exc, rid)
            except Exception as exc:  # still the one error shape, never a framework HTML page
                response = error_response(failure_error(exc, route), rid)
            response.headers["X-Request-Id"] = rid
            self._counters.record(route, response.status_code)
            return response

    def _dispatch(self, request: Request, endpoint: str, args: Mapping[str, Any]) -> Response:
        if endpoint == "health":
            self._health.get()  # at most one Firestore read per HEALTH_CHECK_S per instance
            return json_response({"status": "ok"})
        if endpoint == "metrics":
            check_metrics_token(request, self._deps.settings.metrics_token)
            return Response(self._metrics.get(), content_type=PROMETHEUS_CONTENT_TYPE)
        if endpoint == "openapi":
            return json_response(openapi_document(self._deps.settings.public_api_base_url))
        settings = self._deps.settings
        caller = authenticate(request, settings.tenant_pepper.get_secret_value())
        if is_invoke_key(caller.api_key):  # a per-deployment invoke key: checked against its hash, not with Runpod
            address = client_address(request)
            self._deps.keys.screen(address)
            caller = self._jobs.invoke_caller(
                caller.api_key, endpoint, dict(args), refused=lambda _e: self._deps.keys.refused(address)
            )
            # Its own window per key: an app's traffic never locks its owner out of the management routes.
            window = current_window(
                f"invoke:{caller.invoke_key_id}", settings.invoke_key_rate_limit_per_minute, self._clock()
            )
            count_request(self._deps.store, window)
        else:
            # Before anything is written for this tenant (its rate-limit window included): does Runpod know the key?
            # A sensitive step wants a recent verdict (KEY_REVERIFY_SENSITIVE_S), so a revoked key stops there soon.
            self._deps.keys.verify(caller, client_address(request), sensitive=endpoint in SENSITIVE_ROUTES)
            if endpoint != "create_deployment":  # a create counts inside its own commit
                check_rate_limit(self._deps.store, caller.tenant, settings.rate_limit_per_minute, now=self._clock())
        with slog.bind(tenant=caller.tenant, deployment_id=args.get("deployment_id")):
            return self._handlers[endpoint](request, caller, **args)

    def _create(self, request: Request, caller: Caller) -> Response:
        rate = current_window(caller.tenant, self._deps.settings.rate_limit_per_minute, now=self._clock())
        idempotency_key = request.headers.get("Idempotency-Key")
        try:
            steps.check_idempotency_key(idempotency_key)
            raw = read_json_body(request, self._deps.settings.max_body_bytes)
            body = steps.parse_create_request(raw, self._deps.settings)
        except ApiError:
            count_request(self._deps.store, rate)  # refused requests count too
            raise
        accepted = steps.create_deployment(self._deps, caller, body, raw, idempotency_key=idempotency_key, rate=rate)
        logger.info("deployment accepted", extra={"fields": {"deployment_id": accepted.deployment_id}})
        return json_response(accepted, 202, headers={"Location": accepted.status_url})

    def _list(self, request: Request, caller: Caller) -> Response:
        args = request.args
        page = steps.list_deployments(
            self._deps.store, caller, args.get("status"), args.get("limit"), args.get("page_token")
        )
        return json_response(page)

    def _get(self, _request: Request, caller: Caller, deployment_id: str) -> Response:
        return json_response(steps.owned_deployment(self._deps.store, caller, deployment_id).view())

    def _delete(self, _request: Request, caller: Caller, deployment_id: str) -> Response:
        return json_response(steps.delete_deployment(self._deps, caller, deployment_id), 202)

    def _update(self, request: Request, caller: Caller, deployment_id: str) -> Response:
        raw = read_json_body(request, self._deps.settings.max_body_bytes)
        try:
            change = UpdateDeploymentRequest.model_validate_json(raw)
        except ValidationError as exc:
            raise validation_error(exc) from exc
        return json_response(self._lifecycle.update(caller, deployment_id, change))

    def _logs(self, _request: Request, caller: Caller, deployment_id: str) -> Response:
        steps.owned_deployment(self._deps.store, caller, deployment_id)
        lines = [LogLine.model_validate(line) for line in self._deps.store.events(deployment_id)]
        return json_response(DeploymentLogs(deployment_id=deployment_id, events=lines))

    def _stream(self, request: Request, caller: Caller, deployment_id: str) -> Response:
        steps.owned_deployment(self._deps.store, caller, deployment_id)
        events = deployment_events(
            self._db,
            deployment_id,
            self._stream_max_s,
            lambda doc: Deployment.from_firestore(doc).view().model_dump_json(),
            last_event_id=request.headers.get("Last-Event-ID"),
        )
        return Response(events, mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})

"""The Runpod simulator's WSGI app: REST v2 control plane, ``/v2`` data plane, worker job API and ``/_sim`` controls.

``create_app(...)`` returns a :class:`RunpodSimApp` (a Flask app, so any WSGI server serves it) that owns background
threads and, in process mode, worker processes: call ``app.shutdown()`` when done, or use the app as a context
manager (``with create_app() as app: ...``). Serve it, then tell it its URL with ``app.set_base_url(url)`` so
workers can call back (otherwise the first request's host URL is used).

Routes (``{eid}`` endpoint id, ``{wid}`` worker id):

- REST v2 control plane (``Authorization: Bearer <account key>``; errors are RFC 9457 problem+json):
  ``POST|GET /v2/serverless``, ``GET|PATCH|DELETE /v2/serverless/{id}``, ``GET /v2/serverless/{id}/workers``,
  ``GET /v2/catalog/gpus``.
- ``/v2/{eid}/run``, ``runsync?wait=<ms>``, ``status/{job}``, ``stream/{job}``, ``cancel/{job}``, ``health``,
  ``purge-queue`` (``Authorization: Bearer <account key>``).
- Worker API (``Authorization: <endpoint aiKey>``, as the runpod SDK sends it): ``GET job-take/{wid}``,
  ``GET job-take-batch/{wid}?batch_size=N``, ``GET job-stop/{wid}``, ``POST job-done/{wid}/{job}``,
  ``POST job-stream/{wid}/{job}``, ``GET ping/{wid}``.
- ``POST /_sim/accounts``, ``GET|POST /_sim/scenario``, ``GET /_sim/state``, ``POST /_sim/reset``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from simulators.runpod.core import RunpodSimulator, SimOptions, runsync_wait_ms
from simulators.runpod.model import Account, ProblemError, SimError
from simulators.runpod.workers import launch_instant, launch_process

PROBLEM_JSON = "application/problem+json"
# Advisory quota headers on every authenticated control-plane answer, as Runpod sends them; never enforced (the
# scenario's rate_limit forces 429s).
RATE_LIMIT_POLICY = '"minute";q=60;w=60, "hour";q=3000;w=3600, "day";q=50000;w=86400'
RATE_LIMIT_OK = '"minute";r=59;t=60, "hour";r=2999;t=3600, "day";r=49999;t=86400'
RATE_LIMIT_EXCEEDED = '"minute";r=0;t={retry}, "hour";r=2999;t=3600, "day";r=49999;t=86400'
RETRY_AFTER_S = 1
Exchange = tuple[str, str, str, Any, int, Any, dict[str, str]]


class RunpodSimApp(Flask):
    """The simulator's Flask app; ``sim`` holds the state, ``shutdown()`` stops workers and threads."""

    sim: RunpodSimulator
    # When a list, every control-plane call is appended as (method, path, query string, request JSON, status,
    # response JSON, response headers): tests validate them against Runpod's OpenAPI document.
    exchanges: list[Exchange] | None = None

    def set_base_url(self, base_url: str) -> None:
        """The URL the simulator is served at (workers get it in their ``RUNPOD_WEBHOOK_*`` variables)."""
        self.sim.set_base_url(base_url)

    def shutdown(self) -> None:
        """Stop every worker (no orphan processes) and the supervisor thread; idempotent."""
        self.sim.shutdown()

    def __enter__(self) -> RunpodSimApp:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()


def create_app(
    api_keys: Iterable[str] = (),
    worker_mode: str = "instant",
    worker_command: list[str] | None = None,
    base_url: str | None = None,
    log_dir: Path | None = None,
) -> RunpodSimApp:
    """Build the simulator app.

    Args:
        api_keys: keys registered from the start (more via ``POST /_sim/accounts``).
        worker_mode: ``instant`` (in-process stand-in, the default here) or ``process`` (real worker processes).
        worker_command: argv of the worker process in process mode (default: the SDK-based test worker).
        base_url: the URL the app will be served at, if known now.
        log_dir: where worker logs and homes go (default: a temporary folder removed at shutdown).
    """
    app = RunpodSimApp(__name__)
    options = SimOptions(
        api_keys=tuple(api_keys),
        worker_mode=worker_mode,
        worker_command=tuple(worker_command or ()),
        base_url=base_url,
        log_dir=log_dir,
    )
    sim = RunpodSimulator({"process": launch_process, "instant": launch_instant}, options)
    app.sim = sim

    @app.before_request
    def _note_base_url() -> None:
        sim.note_base_url(request.host_url)

    @app.errorhandler(SimError)
    def _sim_error(exc: SimError) -> Response:
        if g.get("control_plane"):
            errors = exc.errors if isinstance(exc, ProblemError) else None
            return problem(exc.status, str(exc), errors)
        response = jsonify({"error": str(exc)})
        response.status_code = exc.status
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if _is_control_plane_path(request.path):
            return problem(status, exc.description or "")
        response = jsonify({"error": exc.description})
        response.status_code = status
        return response

    @app.errorhandler(Exception)
    def _crash(exc: Exception) -> Response:  # a simulator bug answers JSON, never an HTML page
        app.logger.exception("unhandled error")
        if _is_control_plane_path(request.path):
            return problem(500, f"internal error: {type(exc).__name__}")
        response = jsonify({"error": f"internal error: {type(exc).__name__}"})
        response.status_code = 500
        return response

    @app.after_request
    def _record(response: Response) -> Response:
        if app.exchanges is not None and _is_control_plane_path(request.path):
            body = response.get_json(silent=True) if response.status_code != 204 else None
            sent = request.get_json(silent=True) if request.data else None
            headers = {k: v for k, v in response.headers.items()}
            query = request.query_string.decode()
            app.exchanges.append((request.method, request.path, query, sent, response.status_code, body, headers))
        return response

    _add_control_plane(app, sim)
    _add_data_plane(app, sim)
    _add_worker_api(app, sim)
    _add_test_controls(app, sim)
    return app


def _bearer(header: str | None) -> str | None:
    """The key in an ``Authorization`` header, with or without the ``Bearer`` scheme."""
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    return rest.strip() if scheme.lower() == "bearer" and rest else header.strip()


_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
}


def problem(status: int, detail: str, errors: list[str] | None = None) -> Response:
    """An RFC 9457 problem+json answer in Runpod's ``ErrorResponse`` shape."""
    body: dict[str, Any] = {"title": _TITLES.get(status, HTTPStatus(status).phrase), "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    return response


def _is_control_plane_path(path: str) -> bool:
    return path == "/v2/serverless" or path.startswith(("/v2/serverless/", "/v2/catalog/"))


def _forced_failure(status: int | None) -> Response | None:
    """The answer a scenario forces on a control-plane call, if any."""
    if status == HTTPStatus.TOO_MANY_REQUESTS:
        response = problem(429, "rate limit exceeded for the minute window")
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        response.headers["RateLimit"] = RATE_LIMIT_EXCEEDED.format(retry=RETRY_AFTER_S)
        response.headers["RateLimit-Policy"] = RATE_LIMIT_POLICY
        return response
    if status == HTTPStatus.INTERNAL_SERVER_ERROR:
        return problem(500, "something went wrong, please try again later")
    if status == HTTPStatus.BAD_REQUEST:  # a refusal no retry changes (scenario api_refusals)
        detail = "max workers across all endpoints must not exceed your workers quota (5)"
        return problem(400, detail, ["$.workers.max: exceeds the account's workers quota (5)"])
    return None


def _authenticate(sim: RunpodSimulator) -> Account | Response:
    """Count the call, apply the scenario's forced failures, then check the bearer key (401 problem if bad)."""
    g.control_plane = True
    header = request.headers.get("Authorization") or ""
    scheme, _, key = header.partition(" ")
    key = key.strip() if scheme.lower() == "bearer" else ""
    sim.count_request(key or None)
    forced = _forced_failure(sim.take_forced_failure())
    if forced is not None:
        return forced
    if not key:
        return problem(401, "malformed bearer token" if header else "missing bearer token")
    try:
        return sim.account_for_key(key)
    except SimError:
        return problem(401, "invalid bearer token")


def _json_body() -> Any:
    if not request.data:
        raise ProblemError(400, "request body is required", ["$: expected a JSON object"])
    body = request.get_json(silent=True, force=True)
    if body is None:
        raise ProblemError(400, "request body is not valid JSON", ["$: invalid JSON"])
    return body


def _answer(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


Handler = Callable[..., Response]


def _add_control_plane(app: Flask, sim: RunpodSimulator) -> None:
    def authenticated(handler: Callable[..., Response]) -> Handler:
        @functools.wraps(handler)
        def wrapper(**kwargs: Any) -> Response:
            account = _authenticate(sim)
            return account if isinstance(account, Response) else handler(account, **kwargs)

        return wrapper

    @app.after_request
    def _rate_limit_headers(response: Response) -> Response:
        if g.get("control_plane") and response.status_code != 401 and "RateLimit" not in response.headers:
            response.headers["RateLimit"] = RATE_LIMIT_OK
            response.headers["RateLimit-Policy"] = RATE_LIMIT_POLICY
        return response

    @app.post("/v2/serverless")
    @authenticated
    def create_endpoint(account: Account) -> Response:
        return _answer(sim.create_endpoint(account, _json_body()), 201)

    @app.get("/v2/serverless")
    @authenticated
    def list_endpoints(account: Account) -> Response:
        return _answer(sim.list_endpoints(account))

    @app.get("/v2/serverless/<endpoint_id>")
    @authenticated
    def get_endpoint(account: Account, endpoint_id: str) -> Response:
        return _answer(sim.get_endpoint(account, endpoint_id))

    @app.patch("/v2/serverless/<endpoint_id>")
    @authenticated
    def update_endpoint(account: Account, endpoint_id: str) -> Response:
        return _answer(sim.update_endpoint(account, endpoint_id, _json_body()))

    @app.delete("/v2/serverless/<endpoint_id>")
    @authenticated
    def delete_endpoint(account: Account, endpoint_id: str) -> Response:
        sim.delete_endpoint(account, endpoint_id)
        return Response(status=204)

    @app.get("/v2/serverless/<endpoint_id>/workers")
    @authenticated
    def list_workers(account: Account, endpoint_id: str) -> Response:
        return _answer(sim.list_workers(account, endpoint_id))

    @app.get("/v2/catalog/gpus")
    @authenticated
    def list_gpu_types(account: Account) -> Response:
        include, products, count = _catalog_query()
        return _answer(sim.gpu_catalog(include, products, count))


_PRODUCTS = ("POD", "CLUSTER", "SERVERLESS")
_AVAILABILITY_ONLY = ("count", "cloud", "countryCodes", "cudaVersions", "minCudaVersion")


def _catalog_query() -> tuple[bool, list[str], int]:
    """``include``, ``product`` and ``count`` of ``GET /v2/catalog/gpus``, checked as the document states."""
    include = [v for v in request.args.get("include", "").split(",") if v]
    products = [v for v in request.args.get("product", "").split(",") if v]
    bad = [v for v in include if v != "AVAILABILITY"] + [v for v in products if v not in _PRODUCTS]
    if bad or len(include) > 1:
        raise ProblemError(422, "Request validation failed.", [f"query: unsupported value '{v}'" for v in bad])
    with_availability = bool(include)
    if with_availability and not products:
        raise ProblemError(400, "product is required with include=AVAILABILITY", ["query.product: required"])
    misplaced = [p for p in ("product", *_AVAILABILITY_ONLY) if p in request.args and not with_availability]
    if misplaced:
        detail = f"{', '.join(misplaced)} valid only with include=AVAILABILITY"
        raise ProblemError(400, detail, [f"query.{p}: valid only with include=AVAILABILITY" for p in misplaced])
    if request.args.get("cloud") not in (None, "SECURE", "COMMUNITY"):
        raise ProblemError(422, "Request validation failed.", ["query.cloud: must be SECURE or COMMUNITY"])
    count = request.args.get("count", "1")
    if not count.isdigit() or int(count) < 1:
        raise ProblemError(422, "Request validation failed.", ["query.count: must be an integer >= 1"])
    return with_availability, products, int(count)


def _add_data_plane(app: Flask, sim: RunpodSimulator) -> None:
    def account() -> Account:
        key = _bearer(request.headers.get("Authorization"))
        sim.count_request(key)
        return sim.account_for_key(key)

    @app.post("/v2/<endpoint_id>/run")
    def run(endpoint_id: str) -> Response:
        return jsonify(sim.submit(account(), endpoint_id, request.get_json(silent=True)))

    @app.post("/v2/<endpoint_id>/runsync")
    def runsync(endpoint_id: str) -> Response:
        owner = account()
        wait_ms = runsync_wait_ms(request.args.get("wait"))
        job = sim.submit(owner, endpoint_id, request.get_json(silent=True))
        return jsonify(sim.wait_for(owner, endpoint_id, job["id"], wait_ms))

    @app.route("/v2/<endpoint_id>/status/<job_id>", methods=["GET", "POST"])
    def status(endpoint_id: str, job_id: str) -> Response:
        return jsonify(sim.status(account(), endpoint_id, job_id))

    @app.route("/v2/<endpoint_id>/stream/<job_id>", methods=["GET", "POST"])
    def stream(endpoint_id: str, job_id: str) -> Response:
        return jsonify(sim.stream(account(), endpoint_id, job_id))

    @app.post("/v2/<endpoint_id>/cancel/<job_id>")
    def cancel(endpoint_id: str, job_id: str) -> Response:
        return jsonify(sim.cancel(account(), endpoint_id, job_id))

    @app.get("/v2/<endpoint_id>/health")
    def health(endpoint_id: str) -> Response:
        return jsonify(sim.health(account(), endpoint_id))

    @app.post("/v2/<endpoint_id>/purge-queue")
    def purge_queue(endpoint_id: str) -> Response:
        return jsonify(sim.purge_queue(account(), endpoint_id))


def _add_worker_api(app: Flask, sim: RunpodSimulator) -> None:
    def authorize(endpoint_id: str) -> None:
        sim.authorize_worker(endpoint_id, _bearer(request.headers.get("Authorization")))

    def result_body() -> dict[str, Any]:
        # The SDK posts a JSON document labelled application/x-www-form-urlencoded: read the raw body.
        try:
            body = json.loads(request.get_data(as_text=True) or "{}")
        except ValueError as exc:
            raise SimError("job result is not JSON") from exc
        if not isinstance(body, dict):
            raise SimError("job result must be a JSON object")
        return body

    @app.get("/v2/<endpoint_id>/job-take/<worker_id>")
    def job_take(endpoint_id: str, worker_id: str) -> tuple[str, int] | Response:
        authorize(endpoint_id)
        jobs = sim.take_jobs(endpoint_id, worker_id, 1, sim.job_take_hold_s)
        return jsonify(jobs[0]) if jobs else ("", 204)

    @app.get("/v2/<endpoint_id>/job-take-batch/<worker_id>")
    def job_take_batch(endpoint_id: str, worker_id: str) -> tuple[str, int] | Response:
        authorize(endpoint_id)
        batch_size = max(1, request.args.get("batch_size", 1, type=int))
        jobs = sim.take_jobs(endpoint_id, worker_id, batch_size, sim.job_take_hold_s)
        return jsonify(jobs) if jobs else ("", 204)

    @app.get("/v2/<endpoint_id>/job-stop/<worker_id>")
    def job_stop(endpoint_id: str, worker_id: str) -> tuple[str, int] | Response:
        authorize(endpoint_id)
        job_ids = sim.take_stop_signals(endpoint_id, worker_id, sim.job_take_hold_s)
        return jsonify({"jobsToStop": job_ids}) if job_ids else ("", 204)

    @app.post("/v2/<endpoint_id>/job-done/<worker_id>/<job_id>")
    def job_done(endpoint_id: str, worker_id: str, job_id: str) -> Response:
        authorize(endpoint_id)
        sim.finish_job(endpoint_id, worker_id, job_id, result_body())
        return jsonify({})

    @app.post("/v2/<endpoint_id>/job-stream/<worker_id>/<job_id>")
    def job_stream(endpoint_id: str, worker_id: str, job_id: str) -> Response:
        authorize(endpoint_id)
        sim.add_stream_output(endpoint_id, worker_id, job_id, result_body())
        return jsonify({})

    @app.get("/v2/<endpoint_id>/ping/<worker_id>")
    def ping(endpoint_id: str, worker_id: str) -> Response:
        authorize(endpoint_id)
        sim.ping(endpoint_id, worker_id)
        return jsonify({})


def _add_test_controls(app: Flask, sim: RunpodSimulator) -> None:
    @app.post("/_sim/accounts")
    def register_account() -> tuple[Response, int]:
        payload = request.get_json(silent=True) or {}
        created = sim.register_account(str(payload.get("api_key") or ""))
        return jsonify({"id": created.id, "api_key": created.api_key}), 201

    @app.route("/_sim/scenario", methods=["GET", "POST"])
    def scenario() -> Response:
        changes = request.get_json(silent=True) if request.method == "POST" else {}
        if not isinstance(changes, dict):
            raise SimError("scenario must be a JSON object")
        return jsonify(sim.update_scenario(changes))

    @app.get("/_sim/state")
    def state() -> Response:
        return jsonify(sim.state())

    @app.post("/_sim/reset")
    def reset() -> Response:
        sim.reset()
        return jsonify({"reset": True})

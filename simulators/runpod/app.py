"""The Runpod simulator's WSGI app: GraphQL control plane, ``/v2`` data plane, worker job API and ``/_sim`` controls.

``create_app(...)`` returns a :class:`RunpodSimApp` (a Flask app, so any WSGI server serves it) that owns background
threads and, in process mode, worker processes: call ``app.shutdown()`` when done, or use the app as a context
manager (``with create_app() as app: ...``). Serve it, then tell it its URL with ``app.set_base_url(url)`` so
workers can call back (otherwise the first request's host URL is used).

Routes (``{eid}`` endpoint id, ``{wid}`` worker id):

- ``POST /graphql`` (``?api_key=`` or ``Authorization: Bearer``): ``saveTemplate``, ``deleteTemplate``,
  ``saveEndpoint``, ``deleteEndpoint``, ``myself``, ``gpuTypes``.
- ``/v2/{eid}/run``, ``runsync?wait=<ms>``, ``status/{job}``, ``stream/{job}``, ``cancel/{job}``, ``health``,
  ``purge-queue`` (``Authorization: Bearer <account key>``).
- Worker API (``Authorization: <endpoint aiKey>``, as the runpod SDK sends it): ``GET job-take/{wid}``,
  ``GET job-take-batch/{wid}?batch_size=N``, ``GET job-stop/{wid}``, ``POST job-done/{wid}/{job}``,
  ``POST job-stream/{wid}/{job}``, ``GET ping/{wid}``.
- ``POST /_sim/accounts``, ``GET|POST /_sim/scenario``, ``GET /_sim/state``, ``POST /_sim/reset``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any

from flask import Flask, Response, jsonify, request

from simulators.runpod.core import RUNSYNC_DEFAULT_WAIT_MS, RunpodSimulator, SimOptions
from simulators.runpod.model import Account, SimError
from simulators.runpod.schema import RunpodSchema
from simulators.runpod.workers import launch_instant, launch_process


class RunpodSimApp(Flask):
    """The simulator's Flask app; ``sim`` holds the state, ``shutdown()`` stops workers and threads."""

    sim: RunpodSimulator

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
    schema = RunpodSchema(sim)

    @app.before_request
    def _note_base_url() -> None:
        sim.note_base_url(request.host_url)

    @app.errorhandler(SimError)
    def _sim_error(exc: SimError) -> tuple[Response, int]:
        return jsonify({"error": str(exc)}), exc.status

    _add_control_plane(app, sim, schema)
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


def _add_control_plane(app: Flask, sim: RunpodSimulator, schema: RunpodSchema) -> None:
    @app.post("/graphql")
    def graphql() -> tuple[Response, int] | Response:
        key = request.args.get("api_key") or _bearer(request.headers.get("Authorization"))
        sim.count_request(key)
        forced = sim.take_forced_failure()
        if forced == HTTPStatus.TOO_MANY_REQUESTS:
            response = jsonify({"errors": [{"message": "Too many requests, please retry later"}]})
            response.headers["Retry-After"] = "1"
            return response, 429
        if forced == HTTPStatus.INTERNAL_SERVER_ERROR:
            return jsonify({"errors": [{"message": "Something went wrong. Please try again later."}]}), 500
        if forced == HTTPStatus.OK:  # how Runpod refuses what no retry changes: a GraphQL error in a 200
            message = "Max workers across all endpoints must not exceed your workers quota (5)."
            return jsonify({"data": None, "errors": [{"message": message}]})
        try:
            account = sim.account_for_key(key)
        except SimError:
            return jsonify({"errors": [{"message": "Unauthorized request, please check your API key."}]}), 401
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
            return jsonify({"errors": [{"message": "POST body must be JSON with a 'query' string"}]}), 400
        result = schema.execute(account, payload["query"], payload.get("variables"), payload.get("operationName"))
        # Like Apollo Server: documents that do not parse or validate are 400; execution errors are 200.
        return jsonify(result.formatted), 400 if result.data is None and result.errors else 200


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
        wait_ms = request.args.get("wait", RUNSYNC_DEFAULT_WAIT_MS, type=int)
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

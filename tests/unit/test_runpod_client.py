"""The Runpod REST v2 client against the real simulator app: every call it makes, how failures map onto retry
semantics, and (where Runpod's OpenAPI document is available) that what it sends and reads is Runpod's contract."""

from __future__ import annotations

import json
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from werkzeug.serving import make_server

from shared.errors import PermanentError, RetryableError
from shared.runpod.client import (
    Availability,
    EndpointChange,
    EndpointSpec,
    GpuSelection,
    QueueDelayScaling,
    RequestCountScaling,
    RunpodClient,
    RunpodConnector,
    WorkerLimits,
    WorkerStatus,
)
from shared.runpod.errors import (
    RunpodAuthError,
    RunpodNotFoundError,
    RunpodRejectedError,
    RunpodTimeoutError,
    RunpodUnavailableError,
)
from simulators.runpod import openapi_contract
from simulators.runpod.app import RunpodSimApp, create_app
from simulators.runpod.catalog import gpu_types_in_pool
from tests.support.waiting import eventually

IMAGE = "visgate/worker@sha256:" + "0" * 64


@dataclass(frozen=True)
class Exchange:
    """One HTTP request the client made and the answer it got."""

    method: str
    url: str
    sent: Any
    status: int
    answer: Any
    headers: dict[str, str]

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def query(self) -> str:
        return urlsplit(self.url).query


class RecordingSession(requests.Session):
    """A real session that keeps every request body and answer, as they travelled on the wire."""

    def __init__(self) -> None:
        super().__init__()
        self.exchanges: list[Exchange] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        response = super().send(request, **kwargs)
        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        self.exchanges.append(
            Exchange(
                method=str(request.method),
                url=str(request.url),
                sent=json.loads(body) if body else None,
                status=response.status_code,
                answer=response.json() if response.content else None,
                headers=dict(response.headers),
            )
        )
        return response

    def last(self, method: str) -> Exchange:
        return next(e for e in reversed(self.exchanges) if e.method == method)


@dataclass
class Sim:
    """A served Runpod simulator, one registered account, and a client of that account over a recording session."""

    url: str
    app: RunpodSimApp
    api_key: str
    session: RecordingSession = field(default_factory=RecordingSession)

    def client(self, api_key: str | None = None) -> RunpodClient:
        return RunpodConnector(self.url, self.url, timeout_s=10, session=self.session).client(api_key or self.api_key)

    def scenario(self, **changes: Any) -> None:
        requests.post(f"{self.url}/_sim/scenario", json=changes, timeout=5).raise_for_status()


@pytest.fixture
def sim() -> Iterator[Sim]:
    api_key = f"rpa_{uuid.uuid4().hex}"
    app = create_app(api_keys=[api_key], worker_mode="instant")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    app.set_base_url(url)
    try:
        yield Sim(url=url, app=app, api_key=api_key)
    finally:
        app.shutdown()
        server.shutdown()
        server.server_close()
        thread.join()


def _spec(pools: list[str] | None = None, workers_min: int = 0, **fields: Any) -> EndpointSpec:
    values: dict[str, Any] = {
        "name": f"visgate-{uuid.uuid4().hex[:12]}",
        "image": IMAGE,
        "env": {"HF_MODEL_ID": "org/model"},
        "disk": 5,
        "gpu": GpuSelection(pools=pools or ["ADA_24"]),
        "workers": WorkerLimits(min=workers_min, max=1, idleTimeout=5),
        "scaling": QueueDelayScaling(queueDelay=4),
        "flashboot": "OFF",
        "timeout": 600_000,
    }
    return EndpointSpec(**(values | fields))


# --- control plane ------------------------------------------------------------------------------------------------


def test_an_endpoint_is_created_listed_read_switched_and_deleted(sim: Sim) -> None:
    client = sim.client()
    spec = _spec(pools=["ADA_24"])

    created = client.create_endpoint(spec)
    assert created.name == spec.name
    assert created.gpu is not None
    assert created.gpu.pools == ["ADA_24"]
    assert sim.session.last("POST").sent == spec.body()

    assert created.id in [e.id for e in client.list_endpoints()]
    read = client.get_endpoint(created.id)
    assert (read.id, read.name) == (created.id, spec.name)
    assert sim.session.last("GET").answer["workers"] == {"min": 0, "max": 1, "idleTimeout": 5}

    switched = client.update_endpoint(created.id, EndpointChange(gpu=GpuSelection(pools=["AMPERE_24", "ADA_24"])))
    assert switched.gpu is not None
    assert switched.gpu.pools == ["AMPERE_24", "ADA_24"]
    assert sim.session.last("PATCH").sent == {"gpu": {"pools": ["AMPERE_24", "ADA_24"], "count": 1}}
    client.get_endpoint(created.id)
    assert sim.session.last("GET").answer["workers"] == {"min": 0, "max": 1, "idleTimeout": 5}  # PATCH left them

    client.delete_endpoint(created.id)
    with pytest.raises(RunpodNotFoundError) as gone:
        client.get_endpoint(created.id)
    assert gone.value.reason == "runpod_resource_missing"
    with pytest.raises(RunpodNotFoundError):
        client.delete_endpoint(created.id)
    assert created.id not in [e.id for e in client.list_endpoints()]


def test_workers_show_throttled_then_placed_after_a_pool_switch(sim: Sim) -> None:
    sim.scenario(capacity={"ADA_24": 0})
    client = sim.client()
    endpoint = client.create_endpoint(_spec(pools=["ADA_24"], workers_min=1))

    throttled = eventually(lambda: (w := client.endpoint_workers(endpoint.id)).summary.throttled == 1 and w)
    assert [(w.status, w.gpu_type_id) for w in throttled.workers] == [(WorkerStatus.THROTTLED, None)]
    assert (throttled.summary.total, throttled.summary.running, throttled.summary.idle) == (1, 0, 0)

    client.update_endpoint(endpoint.id, EndpointChange(gpu=GpuSelection(pools=["AMPERE_24"])))

    def placed() -> Any:
        workers = client.endpoint_workers(endpoint.id)
        return workers.summary.throttled == 0 and workers.workers and workers.workers[0].gpu_type_id and workers

    workers = eventually(placed)
    assert workers.workers[0].status in (WorkerStatus.INITIALIZING, WorkerStatus.IDLE, WorkerStatus.RUNNING)
    assert workers.workers[0].gpu_type_id in {gpu.id for gpu in gpu_types_in_pool("AMPERE_24")}


def test_the_catalog_gives_pool_memory_serverless_price_and_availability(sim: Sim) -> None:
    sim.scenario(capacity={"AMPERE_16": 0})

    catalog = {gpu.id: gpu for gpu in sim.client().gpu_catalog()}

    a4500 = catalog["NVIDIA RTX A4500"]
    assert (a4500.pool, a4500.memory, a4500.name) == ("AMPERE_16", 20, "RTX A4500")
    assert a4500.price.serverless == pytest.approx(0.00016 * 3600, abs=1e-3)
    assert a4500.availability is Availability.NONE
    assert catalog["NVIDIA H200"].availability is Availability.HIGH
    assert catalog["NVIDIA GeForce RTX 3070"].pool is None  # pods only: no serverless pool
    assert catalog["NVIDIA GeForce RTX 3070"].price.serverless is None
    query = sim.session.last("GET").query
    assert sorted(query.split("&")) == ["include=AVAILABILITY", "product=SERVERLESS"]


# --- data plane ---------------------------------------------------------------------------------------------------


def test_a_job_is_queued_on_the_data_plane(sim: Sim) -> None:
    client = sim.client()
    endpoint = client.create_endpoint(_spec())

    job = client.run(endpoint.id, {"warmup": True})

    assert job.id
    assert job.status == "IN_QUEUE"
    assert sim.session.last("POST").sent == {"input": {"warmup": True}}
    assert client.endpoint_url(endpoint.id) == f"{sim.url}/v2/{endpoint.id}"


def test_a_job_on_a_missing_endpoint_is_not_found(sim: Sim) -> None:
    with pytest.raises(RunpodNotFoundError):
        sim.client().run("no-such-endpoint", {"warmup": True})


def test_runsync_status_and_cancel_on_the_data_plane(sim: Sim) -> None:
    client = sim.client()
    endpoint = client.create_endpoint(_spec(workers_min=0))

    done = client.runsync(endpoint.id, {"prompt": "x"}, wait_ms=10_000)
    assert (done.status, done.final) == ("COMPLETED", True)
    assert done.output == {"stub": True, "input": {"prompt": "x"}}
    assert done.execution_time is not None and done.delay_time is not None
    assert sim.session.last("POST").query == "wait=10000"
    assert client.job_status(endpoint.id, done.id).status == "COMPLETED"

    idle = client.create_endpoint(_spec(workers=WorkerLimits(min=0, max=0)))
    queued = client.runsync(idle.id, {"prompt": "x"}, wait_ms=1000)
    assert (queued.status, queued.final) == ("IN_QUEUE", False)
    assert client.cancel_job(idle.id, queued.id).status == "CANCELLED"
    assert client.job_status(idle.id, queued.id).final
    with pytest.raises(RunpodNotFoundError):
        client.job_status(idle.id, "no-such-job")


def test_a_read_timeout_is_told_apart_from_unreachable() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(RunpodTimeoutError) as caught:
            RunpodConnector(url, url, timeout_s=0.2).client("k").job_status("e", "j")
        assert isinstance(caught.value, RunpodUnavailableError)  # still retryable for the steps
    with pytest.raises(RunpodUnavailableError) as unreachable:
        RunpodConnector(url, url, timeout_s=0.2).client("k").job_status("e", "j")
    assert not isinstance(unreachable.value, RunpodTimeoutError)


# --- failures -----------------------------------------------------------------------------------------------------


def test_a_refused_key_is_an_auth_error_that_does_not_show_the_key(sim: Sim) -> None:
    wrong = f"rpa_{uuid.uuid4().hex}"

    with pytest.raises(RunpodAuthError) as caught:
        sim.client(wrong).list_endpoints()

    assert isinstance(caught.value, PermanentError)
    assert caught.value.reason == "auth_failed"
    assert wrong not in str(caught.value)
    assert sim.session.last("GET").status == 401


def test_a_server_error_is_retryable_without_a_wait_hint(sim: Sim) -> None:
    sim.scenario(api_errors=1)
    client = sim.client()

    with pytest.raises(RunpodUnavailableError) as caught:
        client.list_endpoints()

    assert isinstance(caught.value, RetryableError)
    assert caught.value.retry_after_s is None
    assert "500" in str(caught.value)
    assert client.list_endpoints() == []  # the scenario forced one failure only


def test_rate_limiting_is_retryable_after_the_exhausted_window_resets(sim: Sim) -> None:
    sim.scenario(rate_limit=1)

    with pytest.raises(RunpodUnavailableError) as caught:
        sim.client().gpu_catalog()

    assert caught.value.retry_after_s == 1.0
    assert "rate limited" in str(caught.value)
    assert sim.session.last("GET").status == 429


def test_a_refusal_carries_runpods_errors_and_is_logged_by_field(sim: Sim, caplog: pytest.LogCaptureFixture) -> None:
    sim.scenario(api_refusals=1)
    caplog.set_level(logging.ERROR, logger="shared.runpod.client")

    with pytest.raises(RunpodRejectedError) as caught:
        sim.client().create_endpoint(_spec())

    assert caught.value.reason == "internal"
    assert caught.value.errors == ("$.workers.max: exceeds the account's workers quota (5)",)
    assert "$.workers.max" in caplog.text


@pytest.mark.parametrize(
    ("change", "field_named"),
    [
        ({"gpu": GpuSelection(pools=["NO_SUCH_POOL"])}, "$.gpu.pools"),
        (
            {
                "scaling": RequestCountScaling(requestCount=1),
                "workers": WorkerLimits(min=0, max=1, idleTimeout=5),
            },
            "$.workers.idleTimeout",
        ),
    ],
)
def test_a_body_runpod_refuses_is_a_rejection_naming_the_field(
    sim: Sim, change: dict[str, Any], field_named: str
) -> None:
    with pytest.raises(RunpodRejectedError) as caught:
        sim.client().create_endpoint(_spec(**change))

    assert any(error.startswith(field_named) for error in caught.value.errors), caught.value.errors
    assert sim.session.last("POST").status == 400


def test_an_unreachable_runpod_is_retryable_and_never_shows_the_key() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    key = f"rpa_{uuid.uuid4().hex}"
    client = RunpodConnector(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}", timeout_s=2).client(key)

    with pytest.raises(RunpodUnavailableError) as caught:
        client.get_endpoint("e1")

    assert "unreachable" in str(caught.value)
    assert key not in str(caught.value)
    assert key not in repr(caught.value.args)


# --- contract -----------------------------------------------------------------------------------------------------


def _is_control_plane(exchange: Exchange) -> bool:
    return exchange.path == "/v2/serverless" or exchange.path.startswith(("/v2/serverless/", "/v2/catalog/"))


def test_every_request_and_answer_is_runpods_openapi_contract(sim: Sim) -> None:
    reason = openapi_contract.missing_reason()
    if reason:
        pytest.skip(reason)
    contract = openapi_contract.default_contract()
    sim.scenario(capacity={"ADA_24": 0})
    client = sim.client()

    endpoint = client.create_endpoint(_spec(pools=["ADA_24"], workers_min=1))
    client.list_endpoints()
    client.get_endpoint(endpoint.id)
    eventually(lambda: client.endpoint_workers(endpoint.id).summary.throttled)
    client.update_endpoint(endpoint.id, EndpointChange(gpu=GpuSelection(pools=["AMPERE_24", "ADA_24"])))
    client.update_endpoint(endpoint.id, EndpointChange(workers=WorkerLimits(min=0, max=2, idleTimeout=30)))
    client.gpu_catalog()
    client.delete_endpoint(endpoint.id)
    for failing, scenario in (
        (lambda: client.get_endpoint(endpoint.id), {}),
        (lambda: sim.client("rpa_wrong").list_endpoints(), {}),
        (client.list_endpoints, {"api_errors": 1}),
        (client.gpu_catalog, {"rate_limit": 1}),
        (lambda: client.create_endpoint(_spec()), {"api_refusals": 1}),
    ):
        if scenario:
            sim.scenario(**scenario)
        with pytest.raises((PermanentError, RetryableError)):
            failing()

    checked = [e for e in sim.session.exchanges if _is_control_plane(e)]
    assert {(e.method, e.status) for e in checked} >= {
        ("POST", 201),
        ("GET", 200),
        ("PATCH", 200),
        ("DELETE", 204),
        ("GET", 404),
        ("GET", 401),
        ("GET", 500),
        ("GET", 429),
        ("POST", 400),
    }
    violations = []
    for exchange in checked:
        template = contract.path_template(exchange.path)
        sent = contract.request_errors(exchange.method, template, exchange.sent, exchange.query)
        answered = contract.response_errors(
            exchange.method, template, exchange.status, exchange.answer, exchange.headers
        )
        violations += [f"{exchange.method} {template} request: {problem}" for problem in sent]
        violations += [f"{exchange.method} {template} {exchange.status}: {problem}" for problem in answered]
    assert violations == []

"""The Python client against the local stack: wait (through a cut stream), inference through the API, failures,
pagination."""

from __future__ import annotations

import uuid

import pytest
from PIL import Image
from visgate_client import Client, DeploymentFailedError, errors
from visgate_client.deployment import PHASES, phases_of

from local.stack import DEMO_API_KEY
from tests.client.conftest import MISSING_MODEL, TINY_JOB, ReadyDeployment


def test_wait_survives_a_cut_stream_without_a_missed_or_repeated_phase(ready: ReadyDeployment) -> None:
    seen = [phase.name for update in ready.updates for phase in update.new_phases]
    final = [phase.name for phase in phases_of(ready.deployment.view)]
    assert seen == final  # every phase once, in order, though the stream was cut after its first event
    assert seen[0] == "validating" and seen[-1] == "ready"
    assert set(seen) <= set(PHASES)
    statuses = [update.status for update in ready.updates]
    assert statuses == sorted(set(statuses), key=statuses.index)  # no update seen twice
    assert len(ready.stream_requests) >= 2  # it did reconnect...
    assert b"Last-Event-ID: " in ready.stream_requests[1]  # ...telling the server what it had seen
    assert b"Last-Event-ID" not in ready.stream_requests[0]


def test_runsync_returns_decoded_images_and_job_metrics(ready: ReadyDeployment) -> None:
    result = ready.deployment.runsync(TINY_JOB)
    assert result.job_id
    assert len(result.images) == 1 and isinstance(result.images[0], Image.Image)
    assert result.images[0].size == (64, 64)
    assert result.seeds == [TINY_JOB["seed"]]
    assert result.delay_time_s is not None and result.delay_time_s >= 0
    assert result.execution_time_s is not None and result.execution_time_s > 0
    assert result.inference_s is not None and result.inference_s > 0
    assert result.wall_s >= result.execution_time_s * 0.5
    assert result.pool and result.estimated_cost_usd is not None and result.estimated_cost_usd >= 0
    assert "image" not in result.output["images"][0]  # the base64 is decoded, not kept twice


def test_run_submits_a_job_to_wait_for(ready: ReadyDeployment) -> None:
    job = ready.deployment.run({**TINY_JOB, "seed": 11})
    assert job.id and job.last_status in {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}
    result = job.wait(timeout=120)
    assert result.seeds == [11] and result.images


def test_a_bad_input_is_refused_by_the_api_naming_the_field(ready: ReadyDeployment) -> None:
    with pytest.raises(errors.InvalidRequestError) as caught:
        ready.deployment.runsync({"prompt": "x", "num_inference_steps": -1})
    assert caught.value.status == 400
    assert caught.value.details[0]["field"] == "input.num_inference_steps"


def test_refresh_get_logs_and_listing(client: Client, ready: ReadyDeployment) -> None:
    deployment = client.get(ready.deployment.id)
    assert deployment.status == "ready" and deployment.endpoint_url
    assert deployment.refresh().view["deployment_id"] == deployment.id
    lines = deployment.logs()
    assert lines and all(line.message for line in lines)
    assert lines == sorted(lines, key=lambda line: line.time or 0)
    assert ready.deployment.id in {d.id for d in client.deployments(status="ready")}


def test_a_failed_model_raises_the_typed_error_with_its_reason(fresh_client: Client) -> None:
    deployment = fresh_client.deploy(MISSING_MODEL)
    with pytest.raises(DeploymentFailedError) as caught:
        deployment.wait(timeout=120)
    assert caught.value.reason == "model_not_found"
    assert caught.value.deployment_id == deployment.id and caught.value.message
    assert deployment.status == "failed"

    deployment.delete(wait=True, timeout=120)
    assert deployment.status == "deleted"
    assert fresh_client.get(deployment.id).status == "deleted"


def test_deployments_iterates_over_every_page(fresh_client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    created = {fresh_client.deploy(MISSING_MODEL).id for _ in range(5)}
    pages = []
    original = fresh_client._get_json

    def counting(path: str, **params: object) -> dict:  # type: ignore[type-arg]
        pages.append(params.get("page_token"))
        return original(path, **params)

    monkeypatch.setattr(fresh_client, "_get_json", counting)
    listed = [d.id for d in fresh_client.deployments(page_size=2)]
    assert sorted(listed) == sorted(created)  # all of them, none twice
    assert len(pages) == 3 and pages[0] is None and all(pages[1:])


def test_deploy_sends_an_idempotency_key_so_a_retry_replays(client: Client) -> None:
    key = uuid.uuid4().hex
    first = client.deploy(MISSING_MODEL, idempotency_key=key)
    again = client.deploy(MISSING_MODEL, idempotency_key=key)
    assert again.id == first.id
    with pytest.raises(errors.IdempotencyKeyReusedError) as caught:
        client.deploy(MISSING_MODEL, idempotency_key=key, ttl_minutes=30)
    assert caught.value.status == 409 and caught.value.request_id


def test_api_errors_are_typed_with_their_request_id(client: Client, api_url: str) -> None:
    with pytest.raises(errors.DeploymentNotFoundError) as caught:
        client.get(uuid.uuid4().hex)
    assert caught.value.code == "deployment_not_found" and caught.value.status == 404
    assert caught.value.request_id and caught.value.request_id in str(caught.value)

    with pytest.raises(errors.InvalidRequestError) as invalid:
        client.deploy("not a model id!")
    assert invalid.value.details and invalid.value.details[0]["field"] == "hf_model_id"

    with pytest.raises(errors.InvalidStatusError):
        list(client.deployments(status="sleeping"))
    with pytest.raises(errors.UnauthenticatedError):
        Client(api_url, " ").get(uuid.uuid4().hex)


def test_missing_configuration_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VISGATE_API_URL", raising=False)
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    with pytest.raises(errors.VisgateError, match="VISGATE_API_URL"):
        Client()
    monkeypatch.setenv("VISGATE_API_URL", "http://127.0.0.1:9")
    with pytest.raises(errors.VisgateError, match="RUNPOD_API_KEY"):
        Client()
    monkeypatch.setenv("RUNPOD_API_KEY", DEMO_API_KEY)
    assert Client().api_url == "http://127.0.0.1:9"

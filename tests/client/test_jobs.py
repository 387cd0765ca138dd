"""Jobs, invoke keys, usage, GPU pools, stop and start through the Python client, against the local stack."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from visgate_client import Client, JobFailedError, NotReadyError, errors

from local.stack import DEMO_MODEL
from tests.client.conftest import TINY_JOB, ReadyDeployment

# Long enough on the CPU worker that a cancel sent right after the submission finds it queued or running.
SLOW_JOB = {**TINY_JOB, "num_inference_steps": 50}


def test_run_then_wait_keeps_the_output_of_the_answer_that_saw_the_end(ready: ReadyDeployment) -> None:
    job = ready.deployment.run({**TINY_JOB, "seed": 21})
    result = job.wait(timeout=120, poll_s=0.1)
    assert result.job_id == job.id and result.seeds == [21]
    assert result.images and result.images[0].size == (64, 64)
    assert result.execution_time_s is not None and result.execution_time_s > 0
    assert job.wait().images  # the kept answer: a final job is not asked again

    again = ready.deployment.job(job.id)  # a later GET of the final job: the API asks Runpod, which still keeps it
    assert again.last_status == "COMPLETED" and again.view["images"] == 1
    assert again.wait().seeds == [21]


def test_cancel_ends_the_job_cancelled_and_the_list_shows_it(ready: ReadyDeployment) -> None:
    job = ready.deployment.run(SLOW_JOB).cancel()
    assert job.last_status == "CANCELLED", job.view
    with pytest.raises(JobFailedError) as caught:
        job.wait(timeout=30)
    assert caught.value.status == "CANCELLED"
    listed = {j.id: j for j in ready.deployment.jobs(page_size=2)}
    assert listed[job.id].last_status == "CANCELLED"
    assert all(j.deployment.id == ready.deployment.id for j in listed.values())
    with pytest.raises(errors.JobNotFoundError):
        ready.deployment.job("nosuchjob-1")


def test_an_invoke_key_is_the_api_key_of_an_app_for_its_deployment_only(
    client: Client, api_url: str, ready: ReadyDeployment
) -> None:
    deployment = client.get(ready.deployment.id)
    created = deployment.create_key()
    assert created.key and created.key.startswith("vdk_") and created.key not in repr(created)
    listed = {key.key_id: key for key in deployment.keys()}
    assert listed[created.key_id].prefix == created.prefix and listed[created.key_id].key is None
    with Client(api_url, created.key) as app:
        mine = app.get(deployment.id)
        assert mine.status == "ready"
        result = mine.runsync({**TINY_JOB, "seed": 31})
        assert result.seeds == [31] and result.images
        with pytest.raises(errors.InvalidApiKeyError):
            list(app.deployments())  # not a route an invoke key opens
        deployment.revoke_key(created.key_id)
        with pytest.raises(errors.InvalidApiKeyError):
            app.get(deployment.id)
    assert created.key_id not in {key.key_id for key in deployment.keys()}
    with pytest.raises(errors.InvokeKeyNotFoundError):
        deployment.revoke_key(created.key_id)


def test_usage_counts_the_jobs_of_each_deployment(client: Client, ready: ReadyDeployment) -> None:
    ready.deployment.runsync(TINY_JOB)
    today = datetime.now(UTC).date()
    report = client.usage(today - timedelta(days=1), today)
    assert (report.from_day, report.to_day) == (today - timedelta(days=1), today)
    row = next(row for row in report.deployments if row.deployment_id == ready.deployment.id)
    assert row.usage.requests >= 1 and row.usage.completed >= 1 and row.usage.images >= 1
    assert row.usage.execution_ms > 0
    assert report.total.requests >= row.usage.requests
    assert client.usage().to_day == today  # the API's default period ends today
    with pytest.raises(errors.InvalidPeriodError):
        client.usage(today, today - timedelta(days=1))


def test_gpus_lists_the_pools_smallest_first(client: Client) -> None:
    pools = client.gpus()
    assert pools
    assert [p.vram_gb for p in pools] == sorted(p.vram_gb for p in pools)
    for pool in pools:
        assert pool.pool and pool.tier and pool.gpu_type_ids
        assert pool.usd_per_hour == pytest.approx(pool.usd_per_second * 3600, abs=1e-3)


def test_stop_refuses_jobs_and_start_brings_the_deployment_back(fresh_client: Client) -> None:
    deployment = fresh_client.deploy(DEMO_MODEL).wait(timeout=300)
    try:
        assert deployment.stop().status == "stopped"
        assert deployment.stop().status == "stopped"  # idempotent
        with pytest.raises(NotReadyError) as caught:
            deployment.runsync(TINY_JOB)
        assert caught.value.details == {"status": "stopped"}
        assert deployment.start().status == "downloading_model"
        assert deployment.wait(timeout=300).status == "ready"
        with pytest.raises(errors.InvalidStateError):
            deployment.start()  # only a stopped deployment starts
        assert deployment.runsync({**TINY_JOB, "seed": 41}).seeds == [41]
    finally:
        deployment.delete(wait=True, timeout=120)

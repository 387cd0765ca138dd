"""The `visgate` command against the local stack: output, one-line errors, exit codes, --help everywhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from PIL import Image
from visgate_client import Client
from visgate_client.cli import cli

from local.stack import DEMO_API_KEY, DEMO_MODEL
from tests.client.conftest import MISSING_MODEL, TINY_JOB, ReadyDeployment

# Long enough on the CPU worker that a cancel sent right after the submission finds it queued or running.
SLOW_JOB = {**TINY_JOB, "num_inference_steps": 50}


@pytest.fixture
def visgate(api_url: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("VISGATE_API_URL", api_url)
    monkeypatch.setenv("RUNPOD_API_KEY", DEMO_API_KEY)
    return CliRunner()


def call(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(cli, list(args), catch_exceptions=False)


def test_get_logs_and_ls(visgate: CliRunner, ready: ReadyDeployment) -> None:
    got = call(visgate, "get", ready.deployment.id)
    assert got.exit_code == 0
    assert json.loads(got.stdout)["status"] == "ready"

    logs = call(visgate, "logs", ready.deployment.id)
    assert logs.exit_code == 0 and "ready" in logs.stdout

    listed = call(visgate, "ls", "--status", "ready", "--json")
    assert ready.deployment.id in {view["deployment_id"] for view in json.loads(listed.stdout)}
    table = call(visgate, "ls", "--status", "ready")
    assert table.exit_code == 0 and ready.deployment.id in table.stdout


def test_run_writes_the_image(visgate: CliRunner, ready: ReadyDeployment, tmp_path: Path) -> None:
    image = tmp_path / "fox.png"
    args = ["--steps", "2", "--seed", "5", "--width", "64", "--height", "64", "-o", str(image)]
    done = call(visgate, "run", ready.deployment.id, "--prompt", "a fox", *args)
    assert done.exit_code == 0, done.output
    assert "seed=5" in done.stdout and "execution_s=" in done.stdout
    with Image.open(image) as written:
        assert written.size == (64, 64)


def test_run_sends_the_webhook_url_to_the_api(visgate: CliRunner, ready: ReadyDeployment) -> None:
    done = call(visgate, "run", ready.deployment.id, "--prompt", "a fox", "--webhook-url", "not a url")
    assert done.exit_code == 1
    assert done.stderr.startswith("error: invalid_request: ")
    verbose = call(visgate, "-v", "run", ready.deployment.id, "--prompt", "a fox", "--webhook-url", "not a url")
    assert '"webhook_url"' in verbose.stderr  # the details name the field


def test_keys_create_ls_and_revoke(visgate: CliRunner, ready: ReadyDeployment) -> None:
    deployment_id = ready.deployment.id
    created = call(visgate, "keys", "create", deployment_id)
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith("vdk_") and "shown only once" in created.stderr and key not in created.stderr
    key_id = created.stderr.split()[2]  # "invoke key <key_id> of deployment <id>: shown only once, ..."

    listed = json.loads(call(visgate, "keys", "ls", deployment_id, "--json").stdout)
    mine = next(item for item in listed if item["key_id"] == key_id)
    assert key.startswith(mine["prefix"]) and "key" not in mine
    table = call(visgate, "keys", "ls", deployment_id)
    assert table.exit_code == 0 and key_id in table.stdout and key not in table.stdout

    as_app = call(visgate, "--api-key", key, "jobs", "ls", deployment_id, "--json")  # the key opens its jobs
    assert as_app.exit_code == 0, as_app.output
    revoked = call(visgate, "keys", "revoke", deployment_id, key_id)
    assert revoked.exit_code == 0 and revoked.stdout.strip() == f"{key_id} revoked"
    refused = call(visgate, "--api-key", key, "get", deployment_id)
    assert refused.exit_code == 1 and refused.stderr.startswith("error: invalid_api_key: ")
    again = call(visgate, "keys", "revoke", deployment_id, key_id)
    assert again.exit_code == 1 and again.stderr.startswith("error: invoke_key_not_found: ")


def test_jobs_ls_get_and_cancel(visgate: CliRunner, ready: ReadyDeployment) -> None:
    deployment_id = ready.deployment.id
    done = ready.deployment.runsync({**TINY_JOB, "seed": 51})
    slow = ready.deployment.run(SLOW_JOB)
    cancelled = call(visgate, "jobs", "cancel", deployment_id, slow.id)
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.stdout.strip() == f"{slow.id} CANCELLED"
    again = call(visgate, "jobs", "cancel", deployment_id, slow.id)  # an ended job stays as it was
    assert again.exit_code == 0 and again.stdout.strip() == f"{slow.id} CANCELLED"

    newest = json.loads(call(visgate, "jobs", "ls", deployment_id, "--limit", "1", "--json").stdout)
    assert [view["job_id"] for view in newest] == [slow.id]
    every = {view["job_id"]: view for view in json.loads(call(visgate, "jobs", "ls", deployment_id, "--json").stdout)}
    assert every[slow.id]["status"] == "CANCELLED" and every[done.job_id]["status"] == "COMPLETED"
    table = call(visgate, "jobs", "ls", deployment_id, "--limit", "2")
    assert table.exit_code == 0 and slow.id in table.stdout and done.job_id in table.stdout

    got = json.loads(call(visgate, "jobs", "get", deployment_id, done.job_id, "--json").stdout)
    assert got["job_id"] == done.job_id and got["status"] == "COMPLETED" and got["images"] == 1
    shown = call(visgate, "jobs", "get", deployment_id, done.job_id)
    assert shown.exit_code == 0 and "COMPLETED" in shown.stdout and "execution s" in shown.stdout
    missing = call(visgate, "jobs", "get", deployment_id, "nosuchjob-1")
    assert missing.exit_code == 1 and missing.stderr.startswith("error: job_not_found: ")


def test_stop_then_start_wait_follows_the_start_to_ready(visgate: CliRunner, client: Client) -> None:
    deployment = client.deploy(DEMO_MODEL).wait(timeout=300)
    try:
        stopped = call(visgate, "stop", deployment.id)
        assert stopped.exit_code == 0 and stopped.stdout.strip() == f"{deployment.id} stopped"
        refused = call(visgate, "run", deployment.id, "--prompt", "a fox")
        assert refused.exit_code == 1 and refused.stderr.startswith("error: deployment_not_ready: ")

        started = call(visgate, "start", deployment.id, "--wait", "--timeout", "300")
        assert started.exit_code == 0, started.output
        assert f"deployment {deployment.id} starting" in started.stderr
        assert "loading_model" in started.stderr and "validating" not in started.stderr  # this start's phases only
        assert f"{deployment.id} ready" in started.stdout and "started → ready" in started.stdout
        assert "creating_endpoint" not in started.stdout
        assert client.get(deployment.id).status == "ready"

        twice = call(visgate, "start", deployment.id)  # only a stopped deployment starts
        assert twice.exit_code == 1 and twice.stderr.startswith("error: invalid_state: ")
        assert call(visgate, "stop", deployment.id).stdout.strip() == f"{deployment.id} stopped"
        plain = call(visgate, "start", deployment.id)
        assert plain.exit_code == 0 and plain.stdout.strip() == f"{deployment.id} downloading_model"
    finally:
        deployment.delete(wait=True, timeout=120)


def test_usage_and_gpus(visgate: CliRunner) -> None:
    report = json.loads(call(visgate, "usage", "--json").stdout)
    assert set(report) == {"from_day", "to_day", "deployments", "total"}
    assert report["total"]["requests"] >= 0
    table = call(visgate, "usage", "--from", report["from_day"], "--to", report["to_day"])
    assert table.exit_code == 0 and "total" in table.stdout
    refused = call(visgate, "usage", "--from", "2026-02-01", "--to", "2026-01-01")
    assert refused.exit_code == 1 and refused.stderr.startswith("error: invalid_period: ")

    pools = json.loads(call(visgate, "gpus", "--json").stdout)
    assert pools and {"pool", "vram_gb", "usd_per_hour", "available"} <= set(pools[0])
    listed = call(visgate, "gpus")
    assert listed.exit_code == 0 and pools[0]["pool"] in listed.stdout


def test_deploy_wait_of_a_failed_model_exits_1_with_the_reason(visgate: CliRunner) -> None:
    done = call(visgate, "deploy", MISSING_MODEL, "--wait", "--timeout", "120")
    assert done.exit_code == 1
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "model_not_found" in error_lines[0]
    deployment_id = error_lines[0].split()[2]
    assert call(visgate, "rm", deployment_id, "--wait").stdout.strip() == f"{deployment_id} deleted"


def test_deploy_without_wait_prints_the_id(visgate: CliRunner) -> None:
    done = call(visgate, "deploy", MISSING_MODEL, "--ttl-minutes", "30", "--cache", "off")
    assert done.exit_code == 0
    deployment_id = done.stdout.strip()
    assert len(deployment_id) == 32
    assert json.loads(call(visgate, "get", deployment_id).stdout)["ttl_minutes"] == 30


def test_an_api_error_is_one_line_with_code_and_request_id(visgate: CliRunner) -> None:
    done = call(visgate, "get", uuid.uuid4().hex)
    assert done.exit_code == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: deployment_not_found: ") and "request_id " in line

    verbose = call(visgate, "--verbose", "deploy", "not a model!")
    assert verbose.exit_code == 1
    assert "error: invalid_request" in verbose.stderr and "hf_model_id" in verbose.stderr  # the details


def test_e2e_json_reports_the_failure_and_exits_1(visgate: CliRunner) -> None:
    done = call(visgate, "e2e", MISSING_MODEL, "--json")
    assert done.exit_code == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert report["error"]["stage"] == "ready" and report["error"]["code"] == "model_not_found"
    assert report["deployment_id"]


def test_missing_key_and_usage_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    monkeypatch.setenv("VISGATE_API_URL", "http://127.0.0.1:9")
    done = call(CliRunner(), "ls")
    assert done.exit_code == 1 and "RUNPOD_API_KEY" in done.stderr
    assert call(CliRunner(), "deploy").exit_code == 2  # click: missing argument
    unreachable = call(CliRunner(), "--api-key", "k", "get", "x" * 32)
    assert unreachable.exit_code == 1 and unreachable.stderr.startswith("error: connection_error")
    assert call(CliRunner(), "--api-key", "k", "jobs", "ls", "x" * 32, "--limit", "0").exit_code == 2
    assert call(CliRunner(), "--api-key", "k", "keys", "revoke", "x" * 32).exit_code == 2  # no KEY_ID
    assert call(CliRunner(), "jobs", "nosuch").exit_code == 2


@pytest.mark.parametrize(
    "command",
    [
        *([name] for name in ("deploy", "ls", "get", "logs", "rm", "stop", "start", "run", "usage", "gpus", "e2e")),
        [],
        *(["keys", *sub] for sub in ([], ["create"], ["ls"], ["revoke"])),
        *(["jobs", *sub] for sub in ([], ["ls"], ["get"], ["cancel"])),
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    done = call(CliRunner(), *command, "--help")
    assert done.exit_code == 0 and "Usage: " in done.stdout


def test_console_script_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "visgate_client", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and "e2e" in done.stdout


def test_logs_follow_ends_with_the_deployment(visgate: CliRunner) -> None:
    deployment_id = call(visgate, "deploy", MISSING_MODEL).stdout.strip()
    done = call(visgate, "logs", deployment_id, "--follow")
    assert done.exit_code == 0
    lines = done.stdout.splitlines()
    assert len(lines) == len(set(lines)) >= 2  # each line once
    assert "model_not_found" in done.stdout or "failed" in done.stdout


def test_ctrl_c_while_waiting_leaves_the_deployment_and_says_how_to_delete_it(api_url: str, client: Client) -> None:
    env = {**os.environ, "VISGATE_API_URL": api_url, "RUNPOD_API_KEY": DEMO_API_KEY}
    command = [sys.executable, "-m", "visgate_client", "deploy", DEMO_MODEL, "--wait"]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        accepted = proc.stderr.readline()  # "deployment <id> of <model> accepted"
        deployment_id = accepted.split()[1]
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert f"visgate rm {deployment_id}" in rest
    deployment = client.get(deployment_id)
    assert deployment.status not in {"deleting", "deleted", "failed"}  # left running
    deployment.delete(wait=True, timeout=120)

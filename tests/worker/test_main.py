"""Start-up and phase reports: signed reports with retries, the start-up sequence, and ``python -m worker.main``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.signing import new_secret
from tests.worker.conftest import GATED, PRIVATE, PUBLIC, Callback
from worker.main import start_up
from worker.reporter import PhaseReporter, progress_ticker
from worker.settings import WorkerSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


def _reporter(callback: Callback, **kwargs: Any) -> PhaseReporter:
    return PhaseReporter("dep-1", callback.url, callback.secret, sleep=lambda _: None, **kwargs)


class TestReporter:
    def test_signed_report_shape(self, callback: Callback) -> None:
        assert _reporter(callback).ready(1.23456, 0.5, 0.25, loaded_from_cache=True)
        assert callback.reports == [
            {
                "schema_version": 1,
                "deployment_id": "dep-1",
                "phase": "ready",
                "timings": {"download_s": 1.235, "load_s": 0.5, "warmup_s": 0.25},
                "loaded_from_cache": True,
            }
        ]

    def test_retries_5xx_with_the_same_message_id(self, callback: Callback) -> None:
        callback.answers = [500, 503]
        assert _reporter(callback).failed("out_of_memory", "CUDA out of memory")
        assert len(callback.message_ids) == 3
        assert len(set(callback.message_ids)) == 1
        assert callback.reports[0]["reason"] == "out_of_memory"

    def test_no_retry_on_4xx(self, callback: Callback) -> None:
        callback.answers = [401]
        assert not _reporter(callback).loading()
        assert len(callback.message_ids) == 1

    def test_a_retry_answered_409_was_taken_already(self, callback: Callback) -> None:
        """The first attempt was applied but its answer lost (502 here): the callback refuses the repeat of the
        same webhook-id with 409 report_replayed, which means delivered; a first attempt's 409 is a refusal."""
        callback.answers = [502, 409]
        assert _reporter(callback).loading()
        assert len(callback.message_ids) == 2 and len(set(callback.message_ids)) == 1
        callback.answers = [409]
        assert not _reporter(callback).loading()

    def test_gives_up_after_the_attempts(self, callback: Callback) -> None:
        callback.answers = [502] * 3
        assert not _reporter(callback, attempts=3).loading()
        assert len(callback.message_ids) == 3

    def test_connection_errors_are_retried(self) -> None:
        sleeps: list[float] = []
        reporter = PhaseReporter("d", "http://127.0.0.1:9/", new_secret(), attempts=4, sleep=sleeps.append)
        assert not reporter.loading()
        assert sleeps == [0.5, 1.0, 2.0]

    def test_progress_ticker_reports_the_last_value(self, callback: Callback) -> None:
        with progress_ticker(_reporter(callback), interval_s=60) as progress:
            for done in range(0, 101, 10):
                progress(done, 100)
        assert [(r["bytes_done"], r["bytes_total"]) for r in callback.reports] == [(100, 100)]


def _settings(tmp_path: Path, hub_url: str, revision: str, model_id: str = PUBLIC, **extra: Any) -> WorkerSettings:
    return WorkerSettings(
        hf_model_id=model_id,
        hf_model_revision=revision,
        hf_endpoint=hub_url,
        worker_model_dir=tmp_path / "models",
        worker_device="cpu",
        **extra,
    )


@pytest.fixture
def cache_env(s3_endpoint: str, bucket: str) -> dict[str, str]:
    """Settings of a private cache in a fresh moto bucket."""
    return {
        "hf_token": "hf_tiny_owner",
        "model_cache_scope": "private",
        "model_cache_s3_url": f"s3://{bucket}/cache",
        "model_cache_aws_endpoint_url": s3_endpoint,
        "model_cache_aws_access_key_id": "k",
        "model_cache_aws_secret_access_key": "s",
    }


class TestStartUp:
    def test_private_cache_miss_then_hit(
        self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str], callback: Callback, cache_env: dict[str, str]
    ) -> None:
        first = _settings(tmp_path / "a", hub_url, hub_revisions[PRIVATE], PRIVATE, **cache_env)
        model, fetched, timings = start_up(first, _reporter(callback))
        assert fetched.source == "hub"
        assert model.defaults.width == model.defaults.height == 64
        assert timings.warmup_s > 0
        assert callback.phases[0] == "downloading_model"
        assert callback.phases[-1] == "loading_model"
        last_progress = [r for r in callback.reports if r["phase"] == "downloading_model"][-1]
        assert last_progress["bytes_done"] == last_progress["bytes_total"] == fetched.manifest.total_bytes

        second = _settings(tmp_path / "b", hub_url, hub_revisions[PRIVATE], PRIVATE, **cache_env)
        _, fetched_again, _ = start_up(second, _reporter(callback))
        assert fetched_again.source == "cache"


def _run_worker(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("RUNPOD_", "HF_", "VISGATE_"))}
    return subprocess.run(
        [sys.executable, "-m", "worker.main", *args],
        env={**clean, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class TestMainProcess:
    def test_ready_then_serves_a_job(
        self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str], callback: Callback
    ) -> None:
        job = {"input": {"prompt": "a photo of a cat", "num_inference_steps": 2, "seed": 5}}
        result = _run_worker(
            {
                "VISGATE_DEPLOYMENT_ID": "dep-1",
                "VISGATE_CALLBACK_URL": callback.url,
                "VISGATE_CALLBACK_SECRET": callback.secret,
                "HF_MODEL_ID": PUBLIC,
                "HF_MODEL_REVISION": hub_revisions[PUBLIC],
                "HF_ENDPOINT": hub_url,
                "WORKER_MODEL_DIR": str(tmp_path),
            },
            "--test_input",
            json.dumps(job),
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert callback.phases[0] == "downloading_model"
        assert callback.phases[-2:] == ["loading_model", "ready"]
        ready = callback.reports[-1]
        assert ready["loaded_from_cache"] is False
        assert "gpu_type_id" not in ready  # CPU, and not placed by Runpod
        assert set(ready["timings"]) == {
            "download_s", "load_s", "warmup_s", "lora_s", "compile_s", "loras", "settings"
        }  # fmt: skip
        assert ready["timings"]["loras"] == []
        assert ready["timings"]["settings"] == {
            "task": "text_to_image",
            "family": "sd",
            "channels_last": False,  # CUDA only
            "sdpa": None,
            "compile": False,
            "compile_mode": None,
            "vae_tiling_above_pixels": 1024 * 1024,
        }
        assert "completed successfully" in result.stdout + result.stderr
        log_lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
        assert log_lines
        assert all(line["deployment_id"] == "dep-1" for line in log_lines)

    def test_gated_model_reports_failed_and_exits_non_zero(
        self, tmp_path: Path, hub_url: str, hub_revisions: dict[str, str], callback: Callback
    ) -> None:
        result = _run_worker(
            {
                "VISGATE_DEPLOYMENT_ID": "dep-1",
                "VISGATE_CALLBACK_URL": callback.url,
                "VISGATE_CALLBACK_SECRET": callback.secret,
                "HF_MODEL_ID": GATED,
                "HF_MODEL_REVISION": hub_revisions[GATED],
                "HF_ENDPOINT": hub_url,
                "HF_TOKEN": "hf_tiny_other",
                "WORKER_MODEL_DIR": str(tmp_path),
            }
        )
        assert result.returncode == 1
        assert callback.reports[-1]["phase"] == "failed"
        assert callback.reports[-1]["reason"] == "model_gated"
        assert "ready" not in callback.phases

    def test_bad_configuration_still_reports(self, callback: Callback) -> None:
        result = _run_worker(
            {
                "VISGATE_DEPLOYMENT_ID": "dep-1",
                "VISGATE_CALLBACK_URL": callback.url,
                "VISGATE_CALLBACK_SECRET": callback.secret,
                "HF_MODEL_ID": PUBLIC,
                "HF_MODEL_REVISION": "main",
            }
        )
        assert result.returncode == 2
        assert callback.reports[-1]["reason"] == "internal"
        assert "HF_MODEL_REVISION" in callback.reports[-1]["message"].upper()

    def test_a_configuration_error_never_logs_or_reports_a_secret(self, callback: Callback) -> None:
        secrets = {
            "HF_TOKEN": "hf_secret_token_value",
            "MODEL_CACHE_AWS_SECRET_ACCESS_KEY": "aws-secret-key-value",
            "BUCKET_SECRET_ACCESS_KEY": "bucket-secret-key-value",
        }
        # A missing variable: pydantic's error input is then the whole environment, secrets included.
        result = _run_worker(
            {
                "VISGATE_DEPLOYMENT_ID": "dep-1",
                "VISGATE_CALLBACK_URL": callback.url,
                "VISGATE_CALLBACK_SECRET": callback.secret,
                "HF_MODEL_REVISION": "main",
                **secrets,
            }
        )
        assert result.returncode == 2
        report = callback.reports[-1]
        assert report["message"] == (
            "invalid worker configuration: HF_MODEL_ID: Field required; "
            "HF_MODEL_REVISION: String should match pattern '^[0-9a-f]{40}$'"
        )
        for value in [*secrets.values(), callback.secret]:
            assert value not in result.stdout + result.stderr
            assert value not in json.dumps(callback.reports)
        logged = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
        assert any(line.get("errors") for line in logged)

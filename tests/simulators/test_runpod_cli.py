"""``python -m simulators.runpod``: prints its URL once listening, serves pre-registered keys, stops on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys

import requests


def test_cli_serves_until_sigterm() -> None:
    command = [sys.executable, "-m", "simulators.runpod", "--port", "0", "--worker-mode", "instant"]
    command += ["--api-key", "rpa_cli", "--worker-command", "python -m simulators.runpod.test_worker"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            assert line.startswith("RUNPOD_SIMULATOR_URL=http://127.0.0.1:")
            url = line.split("=", 1)[1]

            response = requests.get(f"{url}/v2/serverless", headers={"Authorization": "Bearer rpa_cli"}, timeout=5)
            scenario = requests.get(f"{url}/_sim/scenario", timeout=5).json()

            assert response.status_code == 200
            assert response.json() == {"endpoints": []}
            assert scenario["worker_command"] == ["python", "-m", "simulators.runpod.test_worker"]
            assert scenario["worker_mode"] == "instant"
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0

"""How the simulator runs a worker: a real process (the runpod SDK loop, unmodified) or an instant in-process stand-in.

Process mode launches the scenario's ``worker_command`` in its own process group, with the template env plus
Runpod's variables, a private ``HOME`` and the simulator's ``PATH``/``PYTHONPATH`` (``python`` resolves to the
simulator's interpreter), output to ``<log_dir>/<worker id>/worker.log``. Instant mode speaks only the callback
protocol: signed phase reports to ``VISGATE_CALLBACK_URL``, then it completes jobs with a stub output. Like the real
worker (worker/reporter.py), it hands ``downloading_model``, ``loading_model`` and ``ready`` to one sender thread
that delivers them in order while it already takes jobs, and sends ``failed`` after them before it exits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from shared.signing import sign_headers
from simulators.runpod.model import UnknownWorkerError, Worker

if TYPE_CHECKING:
    from simulators.runpod.core import RunpodSimulator

log = logging.getLogger(__name__)

STOP_GRACE_S = 3.0
CRASH_COMMAND = (sys.executable, "-c", "raise SystemExit('simulated crash on start (scenario crash_on_start)')")
INSTANT_MODEL_BYTES = 6_500_000  # about the size of the tiny test pipeline
INSTANT_TIMINGS = {"download_s": 0.01, "load_s": 0.01, "warmup_s": 0.01}
REPORT_ATTEMPTS = 3
_FAILURES = {
    "failed": ("model_load_failed", "simulated: the model failed to load (scenario worker_report=failed)"),
    "out_of_memory": ("out_of_memory", "simulated: CUDA out of memory while loading the model"),
}


class ProcessRunner:
    """A worker running as a real subprocess (own process group, so its children end with it)."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("wb")
        self._process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def poll(self) -> int | None:
        """The exit code once the process has ended, else None."""
        return self._process.poll()

    def stop(self) -> None:
        """SIGTERM the process group (the SDK shuts down gracefully), SIGKILL it after a grace period."""
        if self._process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self._process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self._process.wait()
        # The SDK's heartbeat runs in a child process: make sure nothing of the group outlives the worker.
        self._signal_group(signal.SIGKILL)
        self._log.close()

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)


def launch_process(sim: RunpodSimulator, worker: Worker, env: dict[str, str]) -> ProcessRunner:
    """Start ``worker_command`` (or a crashing stand-in under ``crash_on_start``) for a worker."""
    worker_dir = sim.log_dir / worker.id
    home = worker_dir / "home"
    home.mkdir(parents=True, exist_ok=True)
    python_path = [str(Path.cwd()), *filter(None, [os.environ.get("PYTHONPATH")])]
    full_env = {
        **env,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join(python_path),
        # A private HOME, like a fresh container: no ~/.runpod credentials or caches leak in from the host.
        "HOME": str(home),
        "PYTHONUNBUFFERED": "1",
    }
    argv = list(CRASH_COMMAND) if sim.scenario.crash_on_start else list(sim.scenario.worker_command)
    worker.log_path = str(worker_dir / "worker.log")
    return ProcessRunner(argv, full_env, Path(worker.log_path))


class InstantRunner:
    """An in-process worker: phase reports per the scenario, then stub job results, with no model at all."""

    def __init__(self, sim: RunpodSimulator, worker: Worker, env: dict[str, str]) -> None:
        self._sim = sim
        self._endpoint_id = worker.endpoint_id
        self._worker_id = worker.id
        self._env = env
        self._crash = sim.scenario.crash_on_start
        self._report = sim.scenario.worker_report
        self._stop_event = threading.Event()
        self._exit_code: int | None = None
        self._reports: queue.Queue[dict[str, Any]] = queue.Queue()
        self._sender = threading.Thread(target=self._deliver, name=f"runpod-sim-reports-{worker.id}", daemon=True)
        self._thread = threading.Thread(target=self._run, name=f"runpod-sim-worker-{worker.id}", daemon=True)
        self._thread.start()

    def poll(self) -> int | None:
        """The exit code once the worker thread has ended, else None."""
        return None if self._thread.is_alive() else self._exit_code

    def stop(self) -> None:
        """Ask the thread to end and wait for it."""
        self._stop_event.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            self._exit_code = self._main()
        except Exception:  # a bug here must show up as an unhealthy worker, not a silent thread death
            log.exception("instant worker %s failed", self._worker_id)
            self._exit_code = 1

    def _main(self) -> int:
        if self._crash:
            return 1
        if not self._start_up():
            return 1
        while not self._stop_event.is_set():
            try:
                jobs = self._sim.take_jobs(self._endpoint_id, self._worker_id, 1, wait_s=0.2)
            except UnknownWorkerError:  # stopped by the autoscaler
                return 0
            for job in jobs:
                self._sim.finish_job(self._endpoint_id, self._worker_id, job["id"], {"output": stub_output(job)})
        return 0

    def _start_up(self) -> bool:
        """Report the phases a real worker would; False when the scenario makes start-up fail."""
        self._sender.start()
        total = INSTANT_MODEL_BYTES
        self._reports.put({"phase": "downloading_model", "bytes_done": 0, "bytes_total": total})
        self._reports.put({"phase": "downloading_model", "bytes_done": total, "bytes_total": total})
        self._reports.put({"phase": "loading_model"})
        failure = _FAILURES.get(self._report)
        if failure is not None:
            self._reports.join()  # the process is about to end: what was queued goes first, then the failure
            self._send({"phase": "failed", "reason": failure[0], "message": failure[1]})
            return False
        # Like the real worker: the GPU it runs on (Runpod's RUNPOD_GPU_NAME), so the deployment shows its pool.
        gpu = self._env.get("RUNPOD_GPU_NAME")
        ready = {"phase": "ready", "timings": dict(INSTANT_TIMINGS), "loaded_from_cache": False, "gpu_type_id": gpu}
        self._reports.put(ready)
        return True

    def _deliver(self) -> None:
        """The sender thread: the queued reports, in order."""
        while True:
            report = self._reports.get()
            try:
                self._send(report)
            except Exception:  # one bad report must not stop the later ones
                log.exception("phase report of instant worker %s failed", self._worker_id)
            finally:
                self._reports.task_done()

    def _send(self, report: dict[str, Any]) -> None:
        """POST one signed phase report, retried with backoff on transport errors and 5xx (never on 4xx)."""
        url = self._env.get("VISGATE_CALLBACK_URL")
        secret = self._env.get("VISGATE_CALLBACK_SECRET")
        if not url or not secret:
            return  # an endpoint not created by our provisioning: nothing to report to
        body = json.dumps(
            {"schema_version": 1, "deployment_id": self._env.get("VISGATE_DEPLOYMENT_ID", ""), **report}
        ).encode()
        for attempt in range(REPORT_ATTEMPTS):
            if self._stop_event.is_set():
                return
            headers = {"Content-Type": "application/json", **sign_headers(secret, body)}
            try:
                response = requests.post(url, data=body, headers=headers, timeout=5)
            except requests.RequestException as exc:
                log.warning("phase report to %s failed: %s", url, exc)
            else:
                if response.status_code < HTTPStatus.INTERNAL_SERVER_ERROR:
                    return
                log.warning("phase report to %s answered %s", url, response.status_code)
            time.sleep(0.2 * 2**attempt)


def launch_instant(sim: RunpodSimulator, worker: Worker, env: dict[str, str]) -> InstantRunner:
    """Start an instant worker thread."""
    return InstantRunner(sim, worker, env)


def stub_output(job: dict[str, Any]) -> Any:
    """What the instant worker answers: the warm-up contract for a warm-up job, else an echo."""
    job_input = job.get("input")
    if isinstance(job_input, dict) and job_input.get("warmup") is True:
        return {"warmup": True}
    return {"stub": True, "input": job_input}

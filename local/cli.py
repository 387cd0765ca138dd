"""``python -m local up|down|run|status``: the local stack's command line (the stack itself is local/stack.py).

``up`` prints KEY=VALUE lines on stdout (what runs where: the interface scripts and the README rely on), ``run`` is
``up`` then ``visgate e2e`` of the demo model, ``status`` says what runs and exits 1 unless the stack is healthy,
``down`` stops it all. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from local.processes import REPO_ROOT, Service, process_alive
from local.stack import DEFAULT_STATE_DIR, DEMO_API_KEY, DEMO_LORA, DEMO_MODEL, DEMO_OUTPUT, Stack, StackConfig

logger = logging.getLogger(__name__)


def print_summary(stack: Stack, services: Mapping[str, Service]) -> None:
    """The KEY=VALUE lines ``up`` promises on stdout (the interface scripts and the README rely on)."""
    env = stack.environment(services)
    lines = {}
    if "functions" in services:
        lines["INTAKE_URL"] = env["PUBLIC_API_BASE_URL"]
    for key in (
        "FIRESTORE_EMULATOR_HOST",
        "PUBSUB_EMULATOR_HOST",
        "CLOUD_TASKS_EMULATOR_HOST",
        "FIREBASE_AUTH_EMULATOR_HOST",
    ):
        if key in env:
            lines[key] = env[key]
    if "runpod" in services:
        lines["RUNPOD_API_URL"] = env["RUNPOD_API_BASE_URL"]
    if "hub" in services:
        lines["HF_ENDPOINT"] = env["HF_ENDPOINT"]
        lines["DEMO_MODEL"] = DEMO_MODEL
        lines["DEMO_LORA"] = DEMO_LORA
    lines["STACK_ENV"] = str(stack.env_file)
    for key, value in lines.items():
        print(f"{key}={value}")  # this stdout is the interface of `up`


def main(argv: list[str] | None = None) -> int:
    """``python -m local up|down|run|status``."""
    parser = argparse.ArgumentParser(prog="python -m local", description="The local stack.")
    parser.add_argument("command", choices=("up", "down", "run", "status"))
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="pid file, env file and logs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    stack = Stack(StackConfig(state_dir=args.state_dir))
    if args.command == "down":
        stack.down()
        return 0
    if args.command == "status":
        services = stack.services()
        for service in services.values():
            state = "running" if process_alive(service.pid) else "gone"
            logger.info("%-10s pid %-7s %s  %s", service.name, service.pid, service.address, state)
        healthy = stack.healthy(services)
        logger.info("stack is %s", "up and healthy" if healthy else ("down" if not services else "unhealthy"))
        return 0 if healthy else 1
    services = stack.up()
    print_summary(stack, services)
    if args.command == "run":
        return run_main_job(stack.environment(services))
    return 0


def run_main_job(env: Mapping[str, str]) -> int:
    """``make run``'s job: ``visgate e2e`` of the demo model against this stack (the image kept in out/demo.png),
    then how to reach the API and how to stop the stack. The exit status of the e2e run."""
    api = env["PUBLIC_API_BASE_URL"]
    tiny = ["--steps", "4", "--seed", "7", "--width", "64", "--height", "64"]
    command = [sys.executable, "-m", "visgate_client", "e2e", DEMO_MODEL, *tiny, "-o", str(DEMO_OUTPUT)]
    job_env = {**os.environ, "VISGATE_API_URL": api, "RUNPOD_API_KEY": DEMO_API_KEY}
    status = subprocess.run(command, env=job_env, cwd=REPO_ROOT, check=False).returncode  # our own CLI
    if status != 0:
        logger.error("the e2e run failed (exit %s); the stack's logs are in %s", status, DEFAULT_STATE_DIR / "logs")
    print(f"\nThe API is at {api} (key {DEMO_API_KEY}); for example:")  # the end of `make run`'s output
    print(f"  VISGATE_API_URL={api} RUNPOD_API_KEY={DEMO_API_KEY} .venv/bin/visgate ls")
    print(f"  curl -s {api}/v1/deployments -H 'Authorization: Bearer {DEMO_API_KEY}'")
    print("Stop the stack with: make down")
    return status

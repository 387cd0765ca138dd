"""The local stand-in for Cloud Scheduler: POSTs each declared schedule's function every ``interval_s``.

Run: ``python -m local.scheduler --base-url http://127.0.0.1:8080 [--topology shared.topology]``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import replace

import requests

from shared.config import SchedulerSettings
from shared.topology import Schedule

logger = logging.getLogger(__name__)


def schedule_url(base_url: str, schedule: Schedule) -> str:
    """The URL Cloud Scheduler calls for ``schedule``: its function's path plus the optional suffix."""
    return base_url.rstrip("/") + f"/{schedule.function}" + schedule.path_suffix


def fire(base_url: str, schedule: Schedule, session: requests.Session) -> int | None:
    """One scheduled call, as Cloud Scheduler makes it (POST, JSON, its job name in a header); the status or None."""
    url = schedule_url(base_url, schedule)
    try:
        response = session.post(url, json={}, headers={"X-CloudScheduler-JobName": schedule.name}, timeout=60)
    except requests.RequestException as exc:
        logger.warning("schedule %s: POST %s failed: %s", schedule.name, url, exc)
        return None
    log = logger.info if response.ok else logger.warning
    log("schedule %s: POST %s -> %s", schedule.name, url, response.status_code)
    return response.status_code


def local_schedules(schedules: Sequence[Schedule], settings: SchedulerSettings) -> list[Schedule]:
    """The schedules with their local interval (``SWEEP_INTERVAL_S`` for the sweep) where one is configured."""
    return [
        replace(s, interval_s=getattr(settings, s.interval_setting)) if s.interval_setting else s for s in schedules
    ]


def run(base_url: str, schedules: Sequence[Schedule], stop: threading.Event) -> None:
    """Fire every schedule each ``interval_s`` (first after one interval, as a cron would) until ``stop`` is set."""
    if not schedules:
        logger.info("no schedules declared; nothing to do")
        return
    session = requests.Session()
    now = time.monotonic()
    due = {schedule.name: now + schedule.interval_s for schedule in schedules}
    while not stop.is_set():
        now = time.monotonic()
        for schedule in schedules:
            if now >= due[schedule.name]:
                # Catch up by whole intervals rather than bursting after a stall (a slow call, a suspended laptop).
                due[schedule.name] = max(due[schedule.name] + schedule.interval_s, now)
                fire(base_url, schedule, session)
        stop.wait(min(due.values()) - time.monotonic())


def main(argv: Sequence[str] | None = None) -> None:
    """Run the loop until terminated."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="base URL of the functions host")
    parser.add_argument("--topology", default="shared.topology", help="module declaring FUNCTIONS and SCHEDULES")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    topology = importlib.import_module(args.topology)
    declared = {declared.name for declared in topology.FUNCTIONS}
    schedules = local_schedules(topology.SCHEDULES, SchedulerSettings())  # type: ignore[call-arg]  # from the environment
    for schedule in schedules:
        if schedule.function not in declared:
            parser.error(f"schedule {schedule.name} names an undeclared function {schedule.function}")
        logger.info("schedule %s: every %s s (%s)", schedule.name, schedule.interval_s, schedule.cron)
    run(args.base_url, schedules, threading.Event())


if __name__ == "__main__":
    main()

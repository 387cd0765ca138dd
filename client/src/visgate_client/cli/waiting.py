"""Following a deployment to ready: the live display of a wait (each phase as it is entered, the download as a
progress bar), the ready report (the timings of the latest way to ready) and its table rows, and what Ctrl-C
prints (the deployment keeps running)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import requests
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from visgate_client.cli.cells import show_s
from visgate_client.cli.state import EXIT_INTERRUPTED, State, err, out
from visgate_client.deployment import Deployment, Phase, Update, phases_of
from visgate_client.errors import VisgateError

PROGRESS_POLL_S = 1.0  # progress-only updates are not on the stream: read the view this often while downloading


@contextmanager
def live_wait(state: State, deployment: Deployment, quiet: bool) -> Iterator[Any]:
    """A callback for :meth:`Deployment.wait` that prints each phase and shows the download as a progress bar."""
    if quiet:
        yield None
        return
    shown = current_run(phases_of(deployment.view))
    started = shown[0].at if shown else None
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    task: TaskID = progress.add_task(deployment.status, total=None)
    stop = threading.Event()
    status = {"value": deployment.status}

    def show_bytes(view: dict[str, Any]) -> None:
        done = (view.get("progress") or {}).get("bytes_done")
        total = (view.get("progress") or {}).get("bytes_total")
        if view.get("status") == "downloading_model" and done is not None:
            progress.update(task, completed=done, total=total)

    def poll() -> None:  # only while downloading; the stream brings every status change itself
        while not stop.wait(PROGRESS_POLL_S):
            if status["value"] == "downloading_model":
                try:
                    show_bytes(state.client.get(deployment.id).view)
                except (VisgateError, requests.RequestException):
                    pass

    def on_update(update: Update) -> None:
        nonlocal started
        run_phases = set(current_run(phases_of(update.view)))
        for phase in (p for p in update.new_phases if p in run_phases):
            started = started or phase.at
            offset = (phase.at - started).total_seconds()
            progress.console.print(f"  [green]✓[/] {phase.name:<18} +{offset:6.2f} s", highlight=False)
        status["value"] = update.status
        progress.update(task, description=update.status, total=None, completed=0)
        show_bytes(update.view)

    poller = threading.Thread(target=poll, name="visgate-progress", daemon=True)
    with progress:
        poller.start()
        try:
            yield on_update
        finally:
            stop.set()
            poller.join(timeout=PROGRESS_POLL_S * 2)


def current_run(phases: Sequence[Phase]) -> list[Phase]:
    """The phases of the deployment's latest way to ready: after its last stop, if it was stopped and started again
    (``phase_timestamps`` keeps each status's latest time, so the first deployment's early phases stay in it)."""
    stops = [i for i, phase in enumerate(phases) if phase.name == "stopped"]
    return list(phases[stops[-1] + 1 :]) if stops else list(phases)


def phase_durations(phases: Sequence[Phase]) -> list[tuple[str, float]]:
    """How long each phase lasted (until the next one began), from the server's timestamps."""
    return [(a.name, round((b.at - a.at).total_seconds(), 3)) for a, b in itertools.pairwise(phases)]


def ready_report(deployment: Deployment) -> dict[str, Any]:
    phases = current_run(deployment.phases)
    by_name = {phase.name: phase.at for phase in phases}
    total = None
    if "ready" in by_name and phases:
        total = round((by_name["ready"] - phases[0].at).total_seconds(), 3)
    return {"total_s": total, "phases": dict(phase_durations(phases)), "worker": deployment.timings}


def follow_to_ready(state: State, deployment: Deployment, *, headline: str, origin: str, timeout: float) -> None:
    """``--wait``: print ``headline``, then each phase as it is entered, then the endpoint and the timings from
    ``origin`` (accepted, started) to ready; Ctrl-C leaves the deployment running."""
    try:
        err.print(headline, highlight=False)
        with live_wait(state, deployment, quiet=False) as on_update:
            deployment.wait(timeout=timeout, on_update=on_update)
    except KeyboardInterrupt:
        interrupted(deployment)
    table = Table(title=f"{deployment.id} ready", show_header=False, box=None)
    table.add_row("endpoint", str(deployment.endpoint_url))
    table.add_row("gpu pool", str(deployment.view.get("gpu_pool")))
    add_ready_rows(table, ready_report(deployment), origin=origin)
    out.print(table)


def interrupted(deployment: Deployment) -> NoReturn:
    err.print(
        f"\nstopped waiting; deployment {deployment.id} keeps running. Delete it with: visgate rm {deployment.id}",
        highlight=False,
    )
    raise SystemExit(EXIT_INTERRUPTED)


def add_ready_rows(table: Table, ready: dict[str, Any], origin: str = "accepted") -> None:
    """``origin`` → ready in total and per phase (the server's clock), then the worker's own timings."""
    table.add_row(f"{origin} → ready (server clock)", show_s(ready["total_s"]))
    for name, seconds in ready["phases"].items():
        table.add_row(f"  {name}", show_s(seconds))
    for name, label in (("download_s", "download"), ("load_s", "load"), ("warmup_s", "warm-up inference")):
        if ready["worker"].get(name) is not None:
            table.add_row(f"worker {label} (its own clock)", show_s(ready["worker"][name]))
    if ready["worker"].get("loaded_from_cache") is not None:
        table.add_row("worker loaded from cache", str(ready["worker"]["loaded_from_cache"]).lower())

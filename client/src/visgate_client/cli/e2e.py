"""The ``visgate e2e`` command, the timed end-to-end run: deploy a model, wait for ready, run one inference, delete
it; and its report (a table, or one JSON object with ``ok``), also when a stage fails."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click
import requests
from rich.table import Table

from visgate_client.cli.cells import show_s
from visgate_client.cli.jobs import inference_options, job_input
from visgate_client.cli.state import EXIT_FAILURE, EXIT_INTERRUPTED, State, err, fail, one_line, out
from visgate_client.cli.waiting import add_ready_rows, interrupted, live_wait, ready_report
from visgate_client.deployment import Deployment
from visgate_client.errors import ApiError, VisgateError

DEFAULT_PROMPT = "a watercolor fox in a misty forest"


@dataclass
class E2eRun:
    model: str
    report: dict[str, Any] = field(default_factory=dict)
    deployment: Deployment | None = None


@click.command()
@click.argument("model")
@click.option("--prompt", default=DEFAULT_PROMPT, show_default=True, help="What to draw.")
@inference_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the image here.")
@click.option("--keep", is_flag=True, help="Leave the deployment running (no teardown).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object instead of a table.")
@click.option("--timeout", type=float, default=1800.0, show_default=True, help="Seconds to wait for ready.")
@click.pass_obj
def e2e(
    state: State,
    *,
    model: str,
    prompt: str,
    steps: int | None,
    seed: int | None,
    width: int | None,
    height: int | None,
    output: Path | None,
    keep: bool,
    as_json: bool,
    timeout: float,
) -> None:
    """Deploy MODEL, wait for ready, run one inference, delete it, and print the timings."""
    run_ = E2eRun(model)
    stage = "deploy"
    try:
        accepted = time.monotonic()
        deployment = run_.deployment = state.client.deploy(model)
        if not as_json:
            err.print(f"deployment {deployment.id} of {model} accepted", highlight=False)
        stage = "ready"
        with live_wait(state, deployment, quiet=as_json) as on_update:
            deployment.wait(timeout=timeout, on_update=on_update)
        run_.report["ready"] = {"wall_s": round(time.monotonic() - accepted, 3), **ready_report(deployment)}
        stage = "inference"
        result = deployment.runsync(job_input(prompt, steps=steps, seed=seed, width=width, height=height))
        run_.report["inference"] = {**result.metrics(), "seed": result.seeds[0] if result.seeds else None}
        if output is not None and result.images:
            run_.report["image"] = str(result.save(output))
        stage = "teardown"
        if not keep:
            started = time.monotonic()
            deployment.delete(wait=True, timeout=300)
            run_.report["teardown_s"] = round(time.monotonic() - started, 3)
    except KeyboardInterrupt:
        if run_.deployment is None:
            raise SystemExit(EXIT_INTERRUPTED) from None
        interrupted(run_.deployment)
    except (VisgateError, requests.RequestException) as exc:
        e2e_failed(state, run_, stage=stage, exc=exc, keep=keep, as_json=as_json)
    print_e2e(run_, as_json)


def e2e_failed(state: State, run_: E2eRun, *, stage: str, exc: BaseException, keep: bool, as_json: bool) -> NoReturn:
    """Report the failure (and tear down what was made, unless --keep); exit 1."""
    code = getattr(exc, "reason", None) or getattr(exc, "code", None) or getattr(exc, "status", None)
    run_.report["error"] = {"stage": stage, "code": code or type(exc).__name__, "message": one_line(exc)}
    if isinstance(exc, ApiError):
        run_.report["error"]["request_id"] = exc.request_id
    if run_.deployment is not None and not keep and stage != "teardown":
        try:
            run_.deployment.delete(wait=False)
        except (VisgateError, requests.RequestException):
            pass
    if as_json:
        out.print_json(data={**_e2e_json(run_), "ok": False})
        raise SystemExit(EXIT_FAILURE)
    fail(exc, state.verbose)


def _e2e_json(run_: E2eRun) -> dict[str, Any]:
    d = run_.deployment
    head = {
        "model": run_.model,
        "deployment_id": d.id if d else None,
        "endpoint_id": d.endpoint_id if d else None,
        "gpu_pool": d.view.get("gpu_pool") if d else None,
    }
    return {**head, **run_.report}


def print_e2e(run_: E2eRun, as_json: bool) -> None:
    data = _e2e_json(run_)
    if as_json:
        out.print_json(data={**data, "ok": True})
        return
    ready, inference = data["ready"], data["inference"]
    table = Table("step", "seconds", title=f"visgate e2e: {run_.model} ({data['deployment_id']})")
    add_ready_rows(table, ready)
    table.add_row("accepted → ready (client wall)", show_s(ready["wall_s"]))
    table.add_section()
    table.add_row("inference (client wall)", show_s(inference["wall_s"]))
    table.add_row("  Runpod delay", show_s(inference["delay_s"]))
    table.add_row("  Runpod execution", show_s(inference["execution_s"]))
    table.add_row("  worker inference", show_s(inference["inference_s"]))
    table.add_section()
    table.add_row("teardown (delete → deleted)", show_s(data.get("teardown_s")) if "teardown_s" in data else "kept")
    out.print(table)
    if data.get("image"):
        out.print(f"image: {data['image']} (seed {inference['seed']})", highlight=False)

"""The ``visgate`` commands on jobs: ``run`` (one image on a ready deployment) with the inference options it shares
with ``e2e``, and the ``jobs`` group (``ls``, ``get``, ``cancel``)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from visgate_client.cli.cells import show_ms_as_s, show_time, show_usd
from visgate_client.cli.state import PAGE_SIZE, State, out


def job_input(prompt: str, **options: int | None) -> dict[str, Any]:
    """The worker's job input; ``steps`` is its ``num_inference_steps``, unset options are left to the worker."""
    options["num_inference_steps"] = options.pop("steps", None)
    return {"prompt": prompt, **{key: value for key, value in options.items() if value is not None}}


def inference_options(f: Any) -> Any:
    """The ``--steps``, ``--seed``, ``--width`` and ``--height`` options of ``run`` and ``e2e``."""
    for option in reversed(
        [
            click.option("--steps", type=int, help="Inference steps (the worker's default otherwise)."),
            click.option("--seed", type=int, help="Seed, for a reproducible image."),
            click.option("--width", type=int, help="Image width in pixels."),
            click.option("--height", type=int, help="Image height in pixels."),
        ]
    ):
        f = option(f)
    return f


@click.command()
@click.argument("deployment_id")
@click.option("--prompt", required=True, help="What to draw.")
@inference_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("out.png"),
    show_default=True,
    help="Where to write the (first) image.",
)
@click.option("--webhook-url", metavar="URL", help="A signed job.* event is POSTed here when the job ends (https).")
@click.pass_obj
def run(
    state: State,
    *,
    deployment_id: str,
    prompt: str,
    steps: int | None,
    seed: int | None,
    width: int | None,
    height: int | None,
    output: Path,
    webhook_url: str | None,
) -> None:
    """Generate one image on a ready deployment (through the API)."""
    deployment = state.deployment(deployment_id)
    job = job_input(prompt, steps=steps, seed=seed, width=width, height=height)
    result = deployment.runsync(job, webhook_url=webhook_url)
    saved = result.save(output) if result.images else None
    metrics = " ".join(f"{k}={v}" for k, v in result.metrics().items() if v is not None)
    out.print(
        f"{saved or result.image_urls} seed={result.seeds[0] if result.seeds else None} {metrics}", highlight=False
    )


@click.group()
def jobs() -> None:
    """A deployment's jobs, as the API records them."""


@jobs.command(name="ls")
@click.argument("deployment_id")
@click.option("--limit", type=click.IntRange(min=1), help="Only the newest N jobs (default: every one).")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as one JSON array.")
@click.pass_obj
def list_jobs(state: State, deployment_id: str, limit: int | None, as_json: bool) -> None:
    """List the deployment's jobs, newest first."""
    deployment = state.deployment(deployment_id)
    page_size = min(limit, PAGE_SIZE) if limit is not None else PAGE_SIZE
    found = list(itertools.islice(deployment.jobs(page_size=page_size), limit))
    if as_json:
        out.print_json(data=[job.view for job in found])
        return
    table = Table("JOB ID", "STATUS", "CREATED", "IMAGES", "EXECUTION S", "EST. USD")
    table.columns[0].no_wrap = table.columns[1].no_wrap = True  # ids are what `jobs get` takes: never cut
    for job in found:
        view = job.view
        when, images = show_time(view.get("created_at")), str(view.get("images", 0))
        cost = show_usd(view.get("estimated_cost_usd"))
        table.add_row(job.id, job.last_status, when, images, show_ms_as_s(view.get("execution_ms")), cost)
    out.print(table)


@jobs.command(name="get")
@click.argument("deployment_id")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job as the API answers it (with any output).")
@click.pass_obj
def get_job(state: State, deployment_id: str, job_id: str, as_json: bool) -> None:
    """Show one job: its status, times, cost estimate and error."""
    job = state.deployment(deployment_id).job(job_id)
    if as_json:
        out.print_json(data=job.view)
        return
    view = job.view
    table = Table(title=f"job {job.id}", show_header=False, box=None)
    table.add_row("status", job.last_status)
    table.add_row("created", show_time(view.get("created_at")) or "-")
    table.add_row("finished", show_time(view.get("finished_at")) or "-")
    table.add_row("delay s", show_ms_as_s(view.get("delay_ms")))
    table.add_row("execution s", show_ms_as_s(view.get("execution_ms")))
    table.add_row("est. usd", show_usd(view.get("estimated_cost_usd")))
    table.add_row("pool", str(view.get("pool") or "-"))
    table.add_row("images", str(view.get("images", 0)))
    for url in view.get("output_refs") or []:
        table.add_row("image url", str(url))
    if view.get("error"):
        table.add_row("error", str(view["error"]))
    out.print(table)


@jobs.command(name="cancel")
@click.argument("deployment_id")
@click.argument("job_id")
@click.pass_obj
def cancel_job(state: State, deployment_id: str, job_id: str) -> None:
    """Cancel a queued or running job; prints its status after (a job that already ended stays as it was)."""
    job = state.deployment(deployment_id).job(job_id).cancel()
    out.print(f"{job.id} {job.last_status}", highlight=False)

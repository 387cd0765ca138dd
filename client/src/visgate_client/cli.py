"""The ``visgate`` command: deploy, inspect, run, stop, start and tear down deployments, their jobs and invoke keys,
usage and GPU pools, and the timed end-to-end run.

Results go to stdout, progress and errors to stderr. Every error is one line with the API's code and request id
(``--verbose`` adds the details); the exit status is 0 on success, 1 on any failure, 2 on a usage error and 130
when interrupted.
"""

from __future__ import annotations

import itertools
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
import requests
from rich.console import Console
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
from rich.text import Text

from visgate_client.client import API_KEY_ENV, API_URL_ENV, Client
from visgate_client.deployment import Deployment, Phase, Update, parse_time, phases_of
from visgate_client.errors import ApiError, VisgateError
from visgate_client.models import InvokeKey, Usage

EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130
DEFAULT_PROMPT = "a watercolor fox in a misty forest"
PROGRESS_POLL_S = 1.0  # progress-only updates are not on the stream: read the view this often while downloading
PAGE_SIZE = 100  # the API's largest page: the fewest calls for a whole listing

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@dataclass
class State:
    api_url: str | None
    api_key: str | None
    verbose: bool
    _client: Client | None = field(default=None, repr=False)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.api_url, self.api_key)
        return self._client

    def deployment(self, deployment_id: str) -> Deployment:
        """A deployment known by its id alone (no read): for the commands that act on it."""
        return Deployment(self.client.transport, {"deployment_id": deployment_id})


class VisgateGroup(click.Group):
    """Turns every error of the client into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (VisgateError, requests.RequestException) as exc:
            fail(exc, bool(ctx.obj and ctx.obj.verbose))


def fail(exc: BaseException, verbose: bool) -> NoReturn:
    err.print(Text.assemble(("error: ", "bold red"), one_line(exc)), highlight=False)
    if verbose:
        if isinstance(exc, ApiError) and exc.details is not None:
            err.print_json(data=exc.details)
        err.print("".join(traceback.format_exception(exc)), markup=False, highlight=False)
    raise SystemExit(EXIT_FAILURE)


def one_line(exc: BaseException) -> str:
    if isinstance(exc, requests.RequestException):
        return f"connection_error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return str(exc).replace("\n", " ")


@click.group(cls=VisgateGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--api-url", envvar=API_URL_ENV, metavar="URL", help=f"The API's base URL [env {API_URL_ENV}].")
@click.option(
    "--api-key",
    envvar=API_KEY_ENV,
    metavar="KEY",
    help=f"Your Runpod API key, or a deployment's invoke key for `run`, `get` and `jobs` [env {API_KEY_ENV}].",
)
@click.option("-v", "--verbose", is_flag=True, help="Error details and tracebacks.")
@click.version_option(package_name="visgate-client")
@click.pass_context
def cli(ctx: click.Context, api_url: str | None, api_key: str | None, verbose: bool) -> None:
    """Deploy Hugging Face diffusion models to Runpod Serverless through the Visgate API."""
    ctx.obj = State(api_url, api_key, verbose)


# --- live display of a wait ---------------------------------------------------------------------------------------


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


# --- commands -----------------------------------------------------------------------------------------------------


@cli.command()
@click.argument("model")
@click.option("--revision", help="Branch, tag or commit of the model (default main).")
@click.option("--gpu-tier", metavar="TIER", help="GPU tier to deploy on (default: the cheapest that fits).")
@click.option("--cache", type=click.Choice(["off", "shared", "private"]), help="Model cache scope (default off).")
@click.option("--ttl-minutes", type=click.IntRange(min=1), help="Delete the deployment after this many minutes.")
@click.option("--webhook", metavar="URL", help="Signed lifecycle events are POSTed here.")
@click.option("--hf-token", envvar="HF_TOKEN", metavar="TOKEN", help="Hub token for gated or private models.")
@click.option("--wait", is_flag=True, help="Follow the deployment until it is ready (Ctrl-C leaves it running).")
@click.option("--timeout", type=float, default=1800.0, show_default=True, help="Seconds to wait with --wait.")
@click.pass_obj
def deploy(
    state: State,
    *,
    model: str,
    revision: str | None,
    gpu_tier: str | None,
    cache: str | None,
    ttl_minutes: int | None,
    webhook: str | None,
    hf_token: str | None,
    wait: bool,
    timeout: float,
) -> None:
    """Deploy Hub model MODEL (org/name); prints its id, or with --wait its endpoint and timings."""
    deployment = state.client.deploy(
        model,
        revision=revision,
        gpu_tier=gpu_tier,
        cache_scope=cache,
        ttl_minutes=ttl_minutes,
        user_webhook_url=webhook,
        hf_token=hf_token,
    )
    if not wait:
        out.print(deployment.id, highlight=False)
        return
    headline = f"deployment {deployment.id} of {model} accepted"
    follow_to_ready(state, deployment, headline=headline, origin="accepted", timeout=timeout)


@cli.command(name="ls")
@click.option("--status", help="Only deployments in this status (ready, failed, ...).")
@click.option("--json", "as_json", is_flag=True, help="Print the views as one JSON array.")
@click.pass_obj
def list_deployments(state: State, status: str | None, as_json: bool) -> None:
    """List your deployments, newest first (every page)."""
    deployments = list(state.client.deployments(status=status, page_size=PAGE_SIZE))
    if as_json:
        out.print_json(data=[d.view for d in deployments])
        return
    table = Table("ID", "MODEL", "STATUS", "GPU POOL", "CREATED")
    table.columns[0].no_wrap = True  # ids are what the other commands take: never cut
    for d in deployments:
        table.add_row(d.id, d.model or "", d.status, d.view.get("gpu_pool") or "", _when(d.view.get("created_at")))
    out.print(table)


@cli.command()
@click.argument("deployment_id")
@click.pass_obj
def get(state: State, deployment_id: str) -> None:
    """Print the deployment's public view as JSON."""
    out.print_json(data=state.client.get(deployment_id).view)


@cli.command()
@click.argument("deployment_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the deployment is deleted or failed.")
@click.pass_obj
def logs(state: State, deployment_id: str, follow: bool) -> None:
    """Print the deployment's event log."""
    deployment = state.client.get(deployment_id)
    printed: set[tuple[Any, ...]] = set()

    def show() -> None:
        for line in deployment.logs():
            key = (line.time, line.level, line.message)
            if key not in printed:
                printed.add(key)
                stamp = line.time.isoformat(timespec="milliseconds") if line.time else "-"
                out.print(f"{stamp} {line.level or '-':<7} {line.message}", highlight=False, markup=False)

    show()
    if not follow:
        return
    try:
        for _ in deployment.watch(until=frozenset({"deleted", "failed"})):
            show()
    except KeyboardInterrupt:
        raise SystemExit(EXIT_INTERRUPTED) from None


@cli.command()
@click.argument("deployment_id")
@click.option("--wait", is_flag=True, help="Wait until the teardown is confirmed (deleted).")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds to wait with --wait.")
@click.pass_obj
def rm(state: State, deployment_id: str, wait: bool, timeout: float) -> None:
    """Delete a deployment (its Runpod endpoint is torn down)."""
    deployment = state.deployment(deployment_id).delete(wait=wait, timeout=timeout)
    out.print(f"{deployment.id} {deployment.status}", highlight=False)


@cli.command()
@click.argument("deployment_id")
@click.pass_obj
def stop(state: State, deployment_id: str) -> None:
    """Stop a ready deployment: its workers go to 0 and the endpoint is kept, so nothing bills until `start`."""
    deployment = state.deployment(deployment_id).stop()
    out.print(f"{deployment.id} {deployment.status}", highlight=False)


@cli.command()
@click.argument("deployment_id")
@click.option("--wait", is_flag=True, help="Follow the deployment until it is ready (Ctrl-C leaves it running).")
@click.option("--timeout", type=float, default=1800.0, show_default=True, help="Seconds to wait with --wait.")
@click.pass_obj
def start(state: State, deployment_id: str, wait: bool, timeout: float) -> None:
    """Start a stopped deployment: its workers come back and prove the model again; prints its id and status, or
    with --wait its endpoint and timings."""
    deployment = state.deployment(deployment_id).start()
    if not wait:
        out.print(f"{deployment.id} {deployment.status}", highlight=False)
        return
    headline = f"deployment {deployment.id} starting"
    follow_to_ready(state, deployment, headline=headline, origin="started", timeout=timeout)


def job_input(prompt: str, **options: int | None) -> dict[str, Any]:
    """The worker's job input; ``steps`` is its ``num_inference_steps``, unset options are left to the worker."""
    options["num_inference_steps"] = options.pop("steps", None)
    return {"prompt": prompt, **{key: value for key, value in options.items() if value is not None}}


def inference_options(f: Any) -> Any:
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


@cli.command()
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


# --- invoke keys ----------------------------------------------------------------------------------------------------


@cli.group()
def keys() -> None:
    """Invoke keys: the API key of an app that may run jobs on that one deployment."""


@keys.command(name="create")
@click.argument("deployment_id")
@click.pass_obj
def create_key(state: State, deployment_id: str) -> None:
    """Create an invoke key and print it: it is shown this once (the API keeps only a hash)."""
    key = state.deployment(deployment_id).create_key()
    out.print(key.key, highlight=False, markup=False)
    err.print(
        f"invoke key {key.key_id} of deployment {key.deployment_id}: shown only once, store it now "
        f"(use it as --api-key or {API_KEY_ENV}; revoke it with: visgate keys revoke {key.deployment_id} {key.key_id})",
        highlight=False,
        markup=False,
    )


@keys.command(name="ls")
@click.argument("deployment_id")
@click.option("--json", "as_json", is_flag=True, help="Print the keys as one JSON array.")
@click.pass_obj
def list_keys(state: State, deployment_id: str, as_json: bool) -> None:
    """List the deployment's invoke keys (ids and prefixes: the keys themselves are never shown again)."""
    found = state.deployment(deployment_id).keys()
    if as_json:
        out.print_json(data=[key_view(key) for key in found])
        return
    table = Table("KEY ID", "PREFIX", "CREATED")
    table.columns[0].no_wrap = True
    for key in found:
        table.add_row(key.key_id, key.prefix, key.created_at.strftime("%Y-%m-%d %H:%M:%S"))
    out.print(table)


def key_view(key: InvokeKey) -> dict[str, Any]:
    """An invoke key as the API lists it (never the key itself)."""
    return {
        "key_id": key.key_id,
        "deployment_id": key.deployment_id,
        "prefix": key.prefix,
        "created_at": key.created_at.isoformat(),
    }


@keys.command(name="revoke")
@click.argument("deployment_id")
@click.argument("key_id")
@click.pass_obj
def revoke_key(state: State, deployment_id: str, key_id: str) -> None:
    """Revoke an invoke key: the API refuses it from now on."""
    state.deployment(deployment_id).revoke_key(key_id)
    out.print(f"{key_id} revoked", highlight=False)


# --- jobs -----------------------------------------------------------------------------------------------------------


@cli.group()
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
        when, images = _when(view.get("created_at")), str(view.get("images", 0))
        cost = _usd(view.get("estimated_cost_usd"))
        table.add_row(job.id, job.last_status, when, images, _ms_as_s(view.get("execution_ms")), cost)
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
    table.add_row("created", _when(view.get("created_at")) or "-")
    table.add_row("finished", _when(view.get("finished_at")) or "-")
    table.add_row("delay s", _ms_as_s(view.get("delay_ms")))
    table.add_row("execution s", _ms_as_s(view.get("execution_ms")))
    table.add_row("est. usd", _usd(view.get("estimated_cost_usd")))
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


def _when(value: Any) -> str:
    at = parse_time(value)
    return at.strftime("%Y-%m-%d %H:%M:%S") if at else ""


def _ms_as_s(ms: Any) -> str:
    return _s(ms / 1000) if isinstance(ms, int | float) else "-"


def _usd(value: Any) -> str:
    return f"{value:.6f}" if isinstance(value, int | float) else "-"


@cli.command()
@click.option("--from", "from_day", type=click.DateTime(["%Y-%m-%d"]), help="First UTC day (default: 30 days ago).")
@click.option("--to", "to_day", type=click.DateTime(["%Y-%m-%d"]), help="Last UTC day (default: today).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.pass_obj
def usage(state: State, from_day: datetime | None, to_day: datetime | None, as_json: bool) -> None:
    """Your jobs' usage per deployment and in total (the cost is an estimate: Runpod's bill is the truth)."""
    report = state.client.usage(_day(from_day), _day(to_day))
    if as_json:
        out.print_json(data=asdict(report), default=str)
        return
    columns = ("DEPLOYMENT", "REQUESTS", "COMPLETED", "FAILED", "CANCELLED", "IMAGES", "EXECUTION S", "EST. USD")
    table = Table(*columns, title=f"usage {report.from_day} .. {report.to_day}")
    table.columns[0].no_wrap = True
    for row in report.deployments:
        table.add_row(row.deployment_id, *usage_cells(row.usage))
    table.add_section()
    table.add_row("total", *usage_cells(report.total))
    out.print(table)


def usage_cells(used: Usage) -> list[str]:
    counts = (used.requests, used.completed, used.failed, used.cancelled, used.images)
    return [*(str(n) for n in counts), _s(used.execution_ms / 1000), f"{used.estimated_cost_usd:.6f}"]


def _day(value: datetime | None) -> date | None:
    return value.date() if value is not None else None


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the pools as one JSON array.")
@click.pass_obj
def gpus(state: State, as_json: bool) -> None:
    """The GPU pools a deployment can use: VRAM, serverless price, availability (from Runpod's catalog)."""
    pools = state.client.gpus()
    if as_json:
        out.print_json(data=[asdict(pool) for pool in pools])
        return
    table = Table("POOL", "VRAM GB", "TIER", "USD/S", "USD/H", "AVAILABLE", "GPU TYPES")
    for pool in pools:
        available = "?" if pool.available is None else ("yes" if pool.available else "no")
        table.add_row(
            pool.pool,
            str(pool.vram_gb),
            pool.tier,
            f"{pool.usd_per_second:.5f}",
            f"{pool.usd_per_hour:.4f}",
            available,
            ", ".join(pool.gpu_type_ids),
        )
    out.print(table)


# --- the timed end-to-end run -------------------------------------------------------------------------------------


@dataclass
class E2eRun:
    model: str
    report: dict[str, Any] = field(default_factory=dict)
    deployment: Deployment | None = None


@cli.command()
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
    table.add_row("accepted → ready (client wall)", _s(ready["wall_s"]))
    table.add_section()
    table.add_row("inference (client wall)", _s(inference["wall_s"]))
    table.add_row("  Runpod delay", _s(inference["delay_s"]))
    table.add_row("  Runpod execution", _s(inference["execution_s"]))
    table.add_row("  worker inference", _s(inference["inference_s"]))
    table.add_section()
    table.add_row("teardown (delete → deleted)", _s(data.get("teardown_s")) if "teardown_s" in data else "kept")
    out.print(table)
    if data.get("image"):
        out.print(f"image: {data['image']} (seed {inference['seed']})", highlight=False)


def add_ready_rows(table: Table, ready: dict[str, Any], origin: str = "accepted") -> None:
    """``origin`` → ready in total and per phase (the server's clock), then the worker's own timings."""
    table.add_row(f"{origin} → ready (server clock)", _s(ready["total_s"]))
    for name, seconds in ready["phases"].items():
        table.add_row(f"  {name}", _s(seconds))
    for name, label in (("download_s", "download"), ("load_s", "load"), ("warmup_s", "warm-up inference")):
        if ready["worker"].get(name) is not None:
            table.add_row(f"worker {label} (its own clock)", _s(ready["worker"][name]))
    if ready["worker"].get("loaded_from_cache") is not None:
        table.add_row("worker loaded from cache", str(ready["worker"]["loaded_from_cache"]).lower())


def _s(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def main(argv: Sequence[str] | None = None) -> None:
    """The console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="visgate")

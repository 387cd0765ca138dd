"""The ``visgate`` commands on deployments: ``deploy``, ``ls``, ``get``, ``logs``, ``rm``, ``stop`` and ``start``."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from visgate_client.cli.cells import show_time
from visgate_client.cli.state import EXIT_INTERRUPTED, PAGE_SIZE, State, out
from visgate_client.cli.waiting import follow_to_ready


@click.command()
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


@click.command(name="ls")
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
        table.add_row(d.id, d.model or "", d.status, d.view.get("gpu_pool") or "", show_time(d.view.get("created_at")))
    out.print(table)


@click.command()
@click.argument("deployment_id")
@click.pass_obj
def get(state: State, deployment_id: str) -> None:
    """Print the deployment's public view as JSON."""
    out.print_json(data=state.client.get(deployment_id).view)


@click.command()
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


@click.command()
@click.argument("deployment_id")
@click.option("--wait", is_flag=True, help="Wait until the teardown is confirmed (deleted).")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds to wait with --wait.")
@click.pass_obj
def rm(state: State, deployment_id: str, wait: bool, timeout: float) -> None:
    """Delete a deployment (its Runpod endpoint is torn down)."""
    deployment = state.deployment(deployment_id).delete(wait=wait, timeout=timeout)
    out.print(f"{deployment.id} {deployment.status}", highlight=False)


@click.command()
@click.argument("deployment_id")
@click.pass_obj
def stop(state: State, deployment_id: str) -> None:
    """Stop a ready deployment: its workers go to 0 and the endpoint is kept, so nothing bills until `start`."""
    deployment = state.deployment(deployment_id).stop()
    out.print(f"{deployment.id} {deployment.status}", highlight=False)


@click.command()
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

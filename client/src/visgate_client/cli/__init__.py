"""The ``visgate`` command: deploy, inspect, run, stop, start and tear down deployments, their jobs and invoke keys,
usage and GPU pools, and the timed end-to-end run.

Results go to stdout, progress and errors to stderr. Every error is one line with the API's code and request id
(``--verbose`` adds the details); the exit status is 0 on success, 1 on any failure, 2 on a usage error and 130
when interrupted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
import requests

from visgate_client.cli import deployments, e2e, gpus, jobs, keys, usage
from visgate_client.cli.state import State, fail
from visgate_client.client import API_KEY_ENV, API_URL_ENV
from visgate_client.errors import VisgateError


class VisgateGroup(click.Group):
    """Turns every error of the client into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (VisgateError, requests.RequestException) as exc:
            fail(exc, bool(ctx.obj and ctx.obj.verbose))


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


for command in (
    deployments.deploy,
    deployments.list_deployments,
    deployments.get,
    deployments.logs,
    deployments.rm,
    deployments.stop,
    deployments.start,
    jobs.run,
    keys.keys,
    jobs.jobs,
    usage.usage,
    gpus.gpus,
    e2e.e2e,
):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> None:
    """The console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="visgate")

"""The ``visgate keys`` commands: create, list and revoke a deployment's invoke keys."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from visgate_client.cli.state import State, err, out
from visgate_client.client import API_KEY_ENV
from visgate_client.models import InvokeKey


@click.group()
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

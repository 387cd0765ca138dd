"""The ``visgate gpus`` command: the GPU pools a deployment can use, from Runpod's catalog."""

from __future__ import annotations

from dataclasses import asdict

import click
from rich.table import Table

from visgate_client.cli.state import State, out


@click.command()
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

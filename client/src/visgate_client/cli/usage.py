"""The ``visgate usage`` command: your jobs' usage per deployment and in total, over a range of UTC days."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime

import click
from rich.table import Table

from visgate_client.cli.cells import show_s
from visgate_client.cli.state import State, out
from visgate_client.models import Usage


@click.command()
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
    return [*(str(n) for n in counts), show_s(used.execution_ms / 1000), f"{used.estimated_cost_usd:.6f}"]


def _day(value: datetime | None) -> date | None:
    return value.date() if value is not None else None

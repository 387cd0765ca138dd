"""How values show in the CLI's tables: a time, milliseconds or seconds as seconds, dollars; ``-`` (or an empty
cell) for a value the API did not give."""

from __future__ import annotations

from typing import Any

from visgate_client.deployment import parse_time


def show_time(value: Any) -> str:
    """An API time as ``YYYY-MM-DD HH:MM:SS``; empty without one."""
    at = parse_time(value)
    return at.strftime("%Y-%m-%d %H:%M:%S") if at else ""


def show_ms_as_s(ms: Any) -> str:
    """Milliseconds as seconds, three decimals."""
    return show_s(ms / 1000) if isinstance(ms, int | float) else "-"


def show_usd(value: Any) -> str:
    """Dollars, six decimals (a job costs fractions of a cent)."""
    return f"{value:.6f}" if isinstance(value, int | float) else "-"


def show_s(value: Any) -> str:
    """Seconds, three decimals."""
    return f"{value:.3f}" if isinstance(value, int | float) else "-"

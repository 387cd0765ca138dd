"""Waiting in tests for what the functions do in the background: poll a probe, never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def eventually(probe: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    """The first truthy answer of ``probe`` (polled every 0.1 s); fails the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("condition not met in time")

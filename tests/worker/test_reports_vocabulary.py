"""The worker speaks the platform's vocabulary (shared.messages.PhaseReport, shared.lifecycle.FailureReason), sends
its progress reports without blocking, in order, and its image bakes every shared module it imports."""

from __future__ import annotations

import ast
import re
import threading
from pathlib import Path
from typing import Any

import pytest
import requests

from shared.lifecycle import WORKER_FAILURE_REASONS, FailureReason
from shared.messages import PhaseReport
from tests.worker.conftest import Callback
from worker import errors
from worker.reporter import PhaseReporter

REPO = Path(__file__).resolve().parents[2]


def test_every_worker_error_reason_is_a_platform_reason_the_callback_accepts() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.WorkerError)]
    assert classes
    for cls in classes:
        assert isinstance(cls.reason, FailureReason)
        assert cls.reason in WORKER_FAILURE_REASONS, cls


def test_each_report_parses_as_the_callback_s_schema(callback: Callback) -> None:
    reporter = PhaseReporter("dep-1", callback.url, callback.secret, sleep=lambda _: None)
    reporter.downloading(1, 2)
    reporter.loading()
    reporter.ready(1.0, 2.0, 3.0, False, gpu_type_id="NVIDIA L4", extra_timings={"loras": []})
    reporter.failed(FailureReason.OUT_OF_MEMORY, "CUDA out of memory")
    parsed = [PhaseReport.model_validate(report) for report in callback.reports]
    assert [p.phase for p in parsed] == ["downloading_model", "loading_model", "ready", "failed"]
    assert parsed[2].timings is not None and parsed[2].timings.warmup_s == 3.0
    assert callback.reports[2]["timings"]["loras"] == []  # the load's details travel with the durations
    assert parsed[3].reason == "out_of_memory"


def test_a_reason_outside_the_vocabulary_is_refused_before_sending(callback: Callback) -> None:
    with pytest.raises(ValueError):
        PhaseReporter("dep-1", callback.url, callback.secret).failed("disk_on_fire", "no")
    assert callback.reports == []


class _HeldSession(requests.Session):
    """A real session whose POSTs wait until the test lets them go."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.release.wait(5)
        return super().post(*args, **kwargs)


def test_background_reports_do_not_block_and_arrive_in_order(callback: Callback) -> None:
    session = _HeldSession()
    reporter = PhaseReporter(
        "dep-1", callback.url, callback.secret, session=session, sleep=lambda _: None, background=True
    )
    assert reporter.downloading(0, 10)
    assert reporter.downloading(10, 10)
    assert reporter.loading()
    assert reporter.ready(0.1, 0.2, 0.3, False)
    assert callback.reports == []  # nothing delivered yet, and none of the calls waited
    session.release.set()
    assert reporter.drain(10)
    assert callback.phases == ["downloading_model", "downloading_model", "loading_model", "ready"]


def test_failed_goes_after_what_was_queued(callback: Callback) -> None:
    reporter = PhaseReporter("dep-1", callback.url, callback.secret, sleep=lambda _: None, background=True)
    reporter.downloading(0, 10)
    reporter.loading()
    assert reporter.failed("model_load_failed", "broken weights")
    assert callback.phases == ["downloading_model", "loading_model", "failed"]


def _shared_imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("shared."):
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names if alias.name.startswith("shared.")}
    return modules


def test_the_image_bakes_every_shared_module_the_worker_imports() -> None:
    wanted, seen = set(), set()
    pending = [p for p in (REPO / "worker").glob("*.py")]
    while pending:  # the shared modules' own shared imports too
        path = pending.pop()
        for module in _shared_imports(path) - seen:
            seen.add(module)
            wanted.add(module.replace(".", "/") + ".py")
            pending.append(REPO / (module.replace(".", "/") + ".py"))
    dockerfile = (REPO / "worker" / "Dockerfile").read_text().replace("\\\n", " ")
    copied = set(
        re.findall(r"(shared/\w+\.py)", next(line for line in dockerfile.splitlines() if "COPY shared/" in line))
    )
    ignore = (REPO / "worker" / "Dockerfile.dockerignore").read_text().splitlines()
    let_through = {line[1:] for line in ignore if line.startswith("!shared/")}
    assert wanted <= copied, sorted(wanted - copied)
    assert wanted <= let_through, sorted(wanted - let_through)

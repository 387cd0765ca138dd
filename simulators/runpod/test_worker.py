"""A minimal Runpod worker on the real SDK loop: echoes its input (stands in until ``worker/`` is ready).

Run by the simulator in process mode: ``python -m simulators.runpod.test_worker``. A warm-up job
(``{"warmup": true}``) is answered ``{"warmup": true}``, as the real worker does.
"""

from __future__ import annotations

from typing import Any

import runpod


def handler(job: dict[str, Any]) -> dict[str, Any]:
    """Answer a job: the warm-up contract, or the input echoed back."""
    job_input = job.get("input")
    if isinstance(job_input, dict) and job_input.get("warmup") is True:
        return {"warmup": True}
    return {"echo": job_input}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})

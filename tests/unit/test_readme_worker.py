"""The README's worker-settings table lists the task, LoRA, speed and image-fetch settings with their real defaults."""

from __future__ import annotations

import json
import re
from pathlib import Path

from worker.settings import WorkerSettings

README = Path(__file__).resolve().parents[2] / "README.md"
DOCUMENTED = (
    "worker_task",
    "worker_loras",
    "worker_channels_last",
    "worker_sdpa",
    "worker_compile",
    "worker_compile_mode",
    "worker_vae_tiling_above_pixels",
    "worker_image_fetch_allow_loopback",
)


def test_worker_settings_are_documented_with_their_defaults() -> None:
    section = README.read_text(encoding="utf-8").split("## The worker", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([A-Z0-9_]+)` \| `([^`]*)` \|", section, flags=re.MULTILINE))
    for name in DOCUMENTED:
        field = WorkerSettings.model_fields[name]
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        expected = json.dumps(default) if not isinstance(default, str) else default
        assert rows.get(name.upper()) == expected, name

"""Where the fixture functions record what reached them: one JSON line per call in ``$FIXTURE_SINK_DIR``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def record(function: str, entry: dict[str, Any]) -> None:
    """Append ``entry`` to ``<sink>/<function>.jsonl``."""
    path = Path(os.environ["FIXTURE_SINK_DIR"]) / f"{function}.jsonl"
    with path.open("a") as sink:
        sink.write(json.dumps(entry) + "\n")


def received(sink_dir: Path, function: str) -> list[dict[str, Any]]:
    """Everything ``function`` recorded so far."""
    path = sink_dir / f"{function}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []

"""The README's configuration table lists every setting of every function, with its real default."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic_core import PydanticUndefined

from shared.config import ALL_SETTINGS

README = Path(__file__).resolve().parents[2] / "README.md"
# Read by the Google client libraries and firebase-admin themselves, not by Settings; documented beside the
# emulator host that is ours.
CLIENT_CONVENTIONS = {"FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "FIREBASE_AUTH_EMULATOR_HOST"}


def _rows() -> dict[str, str]:
    """Each documented variable and its Default cell (one cell may hold one value per variable, comma-separated)."""
    section = README.read_text(encoding="utf-8").split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):  # Variable | Default | Set by | What
            continue
        names = re.findall(r"`([A-Z0-9_]+)`", cells[0])
        defaults = re.findall(r"`([^`]*)`", cells[1])
        for position, name in enumerate(names):
            rows[name] = f"`{defaults[position]}`" if len(defaults) == len(names) else cells[1]
    return rows


def _same(documented: str, default: object) -> bool:
    words = {PydanticUndefined: "(required)", None: "unset", "": "empty"}
    if default in words:
        return documented == words[default]
    if not documented.startswith("`"):
        return True  # described in words (a placeholder, "Runpod's")
    literal = documented.strip("`")
    if isinstance(default, bool):
        return literal == str(default).lower()
    if isinstance(default, int | float):
        return float(literal) == float(default)
    return literal == str(default)


def test_every_setting_is_documented_with_its_default() -> None:
    rows = _rows()
    fields = {name.upper(): field for cls in ALL_SETTINGS for name, field in cls.model_fields.items()}

    assert sorted(set(fields) - set(rows)) == []
    assert sorted(set(rows) - set(fields) - CLIENT_CONVENTIONS) == []
    wrong = {name: rows[name] for name, field in fields.items() if not _same(rows[name], field.default)}
    assert wrong == {}

"""The model cache's layout, shared by the worker (reads and writes it) and the callback function (presigns it).

    <prefix>/<org--name>/<commit sha>/<repo path>      one object per repo file
    <prefix>/<org--name>/<commit sha>/manifest.json  {"model_id", "revision", "gated", "files": [{path, size, sha256}]}

The manifest is written last, so its presence means every file it lists is there. Pydantic only: the worker image
copies this file beside shared/signing.py and nothing else of shared/.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

MANIFEST_NAME = "manifest.json"


class ManifestFile(BaseModel):
    """One repo file in the cache."""

    path: str = Field(min_length=1)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Manifest(BaseModel):
    """The list of files cached for one model at one commit; written after all of them."""

    model_id: str
    revision: str
    # Whether the repo was gated when cached: information for operators, never read for access (the callback's
    # grant decides; provisioning grants only after the Hub check passed with the deployment's own token).
    gated: bool = False
    files: list[ManifestFile]

    @property
    def total_bytes(self) -> int:
        """Sum of the file sizes."""
        return sum(item.size for item in self.files)


def repo_dirname(model_id: str) -> str:
    """``org/name`` as one path segment (``org--name``), as the Hub's own cache spells it."""
    return model_id.replace("/", "--")


def object_key(prefix: str, model_id: str, revision: str, path: str) -> str:
    """The object key of one repo file (or of the manifest) under a cache prefix (which may be empty)."""
    parts = [prefix, repo_dirname(model_id), revision, path]
    return "/".join(part for part in parts if part)

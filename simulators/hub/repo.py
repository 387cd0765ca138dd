"""Repos of the Hub simulator: the files on disk, their git and LFS ids, and the content-derived commit sha.

A repo is the folder `<models_root>/<org>/<name>/`. Every regular file in it is a repo file, except `.hubsim.json`
(the simulator's own settings) and anything under `.git/`. Ids follow git and the Hub: a file's blob id is the git blob
sha1 of its content, or of its LFS pointer when the file is stored with LFS; a folder's id is its git tree sha1. The
commit sha is not a git commit: it is the sha1 over the sorted lines `<path>\\0<sha256 of the file>\\n`, so rebuilding
the same files gives the same sha wherever they are built.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml

SETTINGS_FILE = ".hubsim.json"
TOKENS_FILE = ".hubsim-tokens.json"

# The suffixes the Hub's default .gitattributes stores with LFS, plus its rule that files over 10 MiB must be LFS.
LFS_SUFFIXES = frozenset(
    {
        ".7z", ".arrow", ".bin", ".bz2", ".ckpt", ".ftz", ".gguf", ".gz", ".h5", ".joblib", ".mlmodel", ".model",
        ".msgpack", ".npy", ".npz", ".onnx", ".ot", ".parquet", ".pb", ".pickle", ".pkl", ".pt", ".pth", ".rar",
        ".safetensors", ".tar", ".tflite", ".tgz", ".wasm", ".xz", ".zip", ".zst",
    }
)  # fmt: skip
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024

# The Hub's own rule for repo names: letters, digits, `-`, `_`, `.`, not starting with `-` or `.`, no `--` or `..`.
_REPO_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,95}$")
_CHUNK = 1024 * 1024
# A safetensors file starts with the length of its JSON header as a little-endian u64.
_SAFETENSORS_LENGTH_BYTES = 8
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024

GatedMode = Literal[False, "auto", "manual"]


class RepoSettingsError(ValueError):
    """A `.hubsim.json` that does not follow the documented shape."""


@dataclass(frozen=True)
class RepoSettings:
    """Access rules of a repo, read from its `.hubsim.json`.

    Attributes:
        gated: `False`, or the Hub's gating mode (`"auto"` or `"manual"`); files then need an authorized token.
        private: whether the repo is hidden from everyone but an authorized token.
        authorized_tokens: tokens that may read the repo's files (gated) or see it at all (private).
    """

    gated: GatedMode = False
    private: bool = False
    authorized_tokens: frozenset[str] = frozenset()

    @classmethod
    def load(cls, path: Path) -> RepoSettings:
        """Read the settings file, or return the defaults (public, not gated) when there is none.

        Args:
            path: the `.hubsim.json` of a repo.

        Returns:
            The repo's settings.

        Raises:
            RepoSettingsError: if the file is not the documented JSON object.
        """
        if not path.is_file():
            return cls()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise RepoSettingsError(f"{path}: not JSON: {error}") from error
        gated = raw.get("gated", False)
        private = raw.get("private", False)
        tokens = raw.get("authorized_tokens", [])
        if gated not in (False, "auto", "manual"):
            raise RepoSettingsError(f"{path}: gated must be false, 'auto' or 'manual', not {gated!r}")
        if not isinstance(private, bool):
            raise RepoSettingsError(f"{path}: private must be a boolean")
        if not isinstance(tokens, list) or not all(isinstance(token, str) for token in tokens):
            raise RepoSettingsError(f"{path}: authorized_tokens must be a list of strings")
        return cls(gated=gated, private=private, authorized_tokens=frozenset(tokens))


@dataclass(frozen=True)
class RepoFile:
    """One file of a repo, with the ids the Hub reports for it.

    Attributes:
        path: path in the repo, `/`-separated.
        disk_path: where the bytes are.
        size: size in bytes.
        sha256: sha256 of the content (the LFS oid).
        content_oid: git blob sha1 of the content.
        lfs: whether the Hub would store the file with LFS.
    """

    path: str
    disk_path: Path
    size: int
    sha256: str
    content_oid: str
    lfs: bool

    @property
    def lfs_pointer(self) -> bytes:
        """The git LFS pointer file git stores in place of an LFS file."""
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @property
    def blob_id(self) -> str:
        """The git blob id the Hub lists: the pointer's for an LFS file, the content's otherwise."""
        if self.lfs:
            return _git_blob_oid(self.lfs_pointer)
        return self.content_oid

    @property
    def etag(self) -> str:
        """The (unquoted) ETag of `resolve`: the sha256 for an LFS file, the git blob id otherwise."""
        return self.sha256 if self.lfs else self.content_oid


@dataclass(frozen=True)
class RepoSnapshot:
    """A repo as it is on disk now.

    Attributes:
        repo_id: `org/name`.
        sha: the content-derived commit sha.
        files: the repo files by path, sorted by path.
        folders: git tree id of every folder by path (the root is `""`).
        settings: the access rules.
        created_at: oldest file modification time.
        last_modified: newest file modification time.
    """

    repo_id: str
    sha: str
    files: dict[str, RepoFile]
    folders: dict[str, str]
    settings: RepoSettings
    created_at: datetime
    last_modified: datetime

    def read_json(self, path: str) -> Any | None:
        """Parse a repo file as JSON.

        Args:
            path: path in the repo.

        Returns:
            The parsed value, or None when the file is missing or not valid JSON.
        """
        repo_file = self.files.get(path)
        if repo_file is None:
            return None
        try:
            return json.loads(repo_file.disk_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None

    def card_data(self) -> dict[str, Any] | None:
        """The YAML metadata block at the top of README.md, as the Hub reads it into `cardData`."""
        readme = self.files.get("README.md")
        if readme is None:
            return None
        try:
            text = readme.disk_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, flags=re.DOTALL)
        if match is None:
            return None
        try:
            data = yaml.safe_load(match.group(1))
        except yaml.YAMLError:
            return None
        return data if isinstance(data, dict) else None

    def safetensors_parameters(self) -> dict[str, int] | None:
        """Parameter counts per dtype over the root-level `*.safetensors` files, as the Hub reports them.

        Returns:
            `{dtype: count}`, or None when there is no root-level safetensors file or one cannot be parsed.
        """
        counts: dict[str, int] = {}
        roots = [file for path, file in self.files.items() if "/" not in path and path.endswith(".safetensors")]
        if not roots:
            return None
        for repo_file in roots:
            header = _safetensors_header(repo_file.disk_path)
            if header is None:
                return None
            for name, tensor in header.items():
                if name == "__metadata__":
                    continue
                count = 1
                for dim in tensor["shape"]:
                    count *= int(dim)
                counts[tensor["dtype"]] = counts.get(tensor["dtype"], 0) + count
        return counts


def is_valid_repo_part(part: str) -> bool:
    """Whether `part` is a valid org or repo name on the Hub (this also refuses `.`, `..` and anything with `/`)."""
    return bool(_REPO_PART.fullmatch(part)) and "--" not in part and ".." not in part


def commit_sha(files: dict[str, str]) -> str:
    """The simulator's commit sha of a repo.

    Args:
        files: sha256 of each repo file, by path.

    Returns:
        40 lowercase hex digits.
    """
    digest = hashlib.sha1(usedforsecurity=False)
    for path in sorted(files):
        digest.update(f"{path}\0{files[path]}\n".encode())
    return digest.hexdigest()


def load_tokens(models_root: Path) -> dict[str, str]:
    """The valid tokens of the simulator, from `<models_root>/.hubsim-tokens.json` (none when it is missing).

    Args:
        models_root: the folder holding the repos.

    Returns:
        Username by token.
    """
    path = models_root / TOKENS_FILE
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise RepoSettingsError(f"{path}: must map tokens to usernames")
    return raw


class RepoStore:
    """Finds repos under a models root and keeps their hashes until their files change."""

    def __init__(self, models_root: Path) -> None:
        """Serve repos from `models_root`.

        Args:
            models_root: the folder holding `<org>/<name>/` repos.
        """
        self._root = models_root
        self._lock = threading.Lock()
        # Per file (path, size, mtime) → its hashes, so a changed repo only rehashes the files that changed.
        self._hashes: dict[tuple[Path, int, int], tuple[str, str]] = {}

    def get(self, repo_id: str) -> RepoSnapshot | None:
        """The repo as it is on disk now.

        Args:
            repo_id: `org/name`.

        Returns:
            The snapshot, or None when there is no such repo (or the id is not a valid repo id).
        """
        parts = repo_id.split("/")
        if len(parts) != len(("org", "name")) or not all(is_valid_repo_part(part) for part in parts):
            return None
        folder = self._root / parts[0] / parts[1]
        if not folder.is_dir():
            return None
        settings = RepoSettings.load(folder / SETTINGS_FILE)
        files: dict[str, RepoFile] = {}
        mtimes: list[float] = []
        for disk_path in sorted(folder.rglob("*")):
            relative = disk_path.relative_to(folder).as_posix()
            if not disk_path.is_file() or relative == SETTINGS_FILE or relative.split("/")[0] == ".git":
                continue
            stat = disk_path.stat()
            sha256, content_oid = self._file_hashes(disk_path, stat.st_size, stat.st_mtime_ns)
            lfs = disk_path.suffix.lower() in LFS_SUFFIXES or stat.st_size > LFS_SIZE_THRESHOLD
            files[relative] = RepoFile(relative, disk_path, stat.st_size, sha256, content_oid, lfs)
            mtimes.append(stat.st_mtime)
        if not mtimes:
            mtimes.append(folder.stat().st_mtime)
        return RepoSnapshot(
            repo_id=repo_id,
            sha=commit_sha({path: repo_file.sha256 for path, repo_file in files.items()}),
            files=dict(sorted(files.items())),
            folders=_tree_oids(files),
            settings=settings,
            created_at=datetime.fromtimestamp(min(mtimes), tz=UTC),
            last_modified=datetime.fromtimestamp(max(mtimes), tz=UTC),
        )

    def _file_hashes(self, disk_path: Path, size: int, mtime_ns: int) -> tuple[str, str]:
        key = (disk_path, size, mtime_ns)
        with self._lock:
            cached = self._hashes.get(key)
        if cached is not None:
            return cached
        sha256 = hashlib.sha256()
        blob = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
        with disk_path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                sha256.update(chunk)
                blob.update(chunk)
        hashes = (sha256.hexdigest(), blob.hexdigest())
        with self._lock:
            self._hashes[key] = hashes
        return hashes


def _git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(f"blob {len(content)}\0".encode() + content, usedforsecurity=False).hexdigest()


def _tree_oids(files: dict[str, RepoFile]) -> dict[str, str]:
    """Git tree ids of every folder (root included as `""`), built bottom-up as git does."""
    children: dict[str, dict[str, tuple[bool, str]]] = {"": {}}
    for path in files:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            children.setdefault(folder, {})
            children["/".join(parts[: depth - 1])][parts[depth - 1]] = (True, folder)
        children["/".join(parts[:-1])][parts[-1]] = (False, path)
    oids: dict[str, str] = {}
    # Deepest folders first, so each folder's subfolders already have their ids.
    for folder in sorted(children, key=lambda name: name.count("/") + (1 if name else 0), reverse=True):
        entries = []
        for name, (is_dir, path) in children[folder].items():
            if is_dir:
                entries.append((f"{name}/", b"40000 " + name.encode() + b"\0" + bytes.fromhex(oids[path])))
            else:
                entries.append((name, b"100644 " + name.encode() + b"\0" + bytes.fromhex(files[path].blob_id)))
        # Git orders tree entries by name, comparing a folder as if its name ended with `/`.
        body = b"".join(entry for _, entry in sorted(entries))
        oids[folder] = hashlib.sha1(f"tree {len(body)}\0".encode() + body, usedforsecurity=False).hexdigest()
    return oids


def _safetensors_header(path: Path) -> dict[str, Any] | None:
    """The JSON header of a safetensors file, or None when the file is not one."""
    try:
        with path.open("rb") as handle:
            prefix = handle.read(_SAFETENSORS_LENGTH_BYTES)
            if len(prefix) != _SAFETENSORS_LENGTH_BYTES:
                return None
            (length,) = struct.unpack("<Q", prefix)
            if length > _SAFETENSORS_MAX_HEADER:
                return None
            header = json.loads(handle.read(length))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(header, dict):
        return None
    tensors = {name: value for name, value in header.items() if name != "__metadata__"}
    valid = all(isinstance(value, dict) and "dtype" in value and "shape" in value for value in tensors.values())
    return header if valid else None

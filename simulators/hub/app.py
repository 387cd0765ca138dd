"""A Hugging Face Hub simulator: the routes huggingface_hub uses to read models, served from a local folder.

Routes (all answers and errors as the Hub gives them, so the real client works against `HF_ENDPOINT=<this app>`):
- `GET /api/whoami-v2`: the caller's account.
- `GET /api/agent-harnesses`: an empty registry (huggingface_hub fetches it for its user agent).
- `GET /api/models/{org}/{name}[/revision/{revision}]`: model info (`blobs`, `expand`/`expand[]`, `securityStatus`).
- `GET /api/models/{org}/{name}/tree/{revision}[/{path}]`: file listing (`recursive`, `expand`, `cursor` pages with a
  `Link: <...>; rel="next"` header).
- `POST /api/models/{org}/{name}/paths-info/{revision}`: entries of the given `paths`.
- `GET /api/models/{org}/{name}/refs` and `/auth-check`.
- `GET|HEAD /{org}/{name}/resolve/{revision}/{path}`: file bytes, served directly (no CDN redirect) with
  `X-Repo-Commit`, a quoted `ETag` (the sha256 for LFS files, the git blob id otherwise), `X-Linked-Etag` and
  `X-Linked-Size` for LFS files, and single-range `Range` requests (206, or 416 when unsatisfiable).

Errors carry `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`, `GatedRepo`) and `X-Error-Message`
headers and a `{"error": ...}` body. A missing repo answers 401 without a token and 404 with one; a private repo is
missing to all but its authorized tokens; a gated repo's info and listing are public but its files need an authorized
token (401 without a token, 403 with another valid one); a token not in `.hubsim-tokens.json` gets 401 everywhere.
Only `main` and the repo's commit sha are revisions.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException
from werkzeug.http import parse_range_header
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from simulators.hub.repo import RepoFile, RepoSettingsError, RepoSnapshot, RepoStore, load_tokens

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

DEFAULT_BRANCH = "main"
TREE_PAGE_SIZE = 1000
TREE_PAGE_SIZE_EXPANDED = 50
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
# What the Hub accepts in `expand` for models; anything else is a 400 there too.
EXPAND_PROPERTIES = frozenset(
    {
        "author", "baseModels", "cardData", "childrenModelCount", "config", "createdAt", "disabled", "downloads",
        "downloadsAllTime", "evalResults", "gated", "gguf", "inference", "inferenceProviderMapping", "lastModified",
        "library_name", "likes", "mask_token", "model-index", "pipeline_tag", "private", "resourceGroup",
        "safetensors", "sha", "siblings", "spaces", "tags", "transformersInfo", "trendingScore", "usedStorage",
        "widgetData",
    }
)  # fmt: skip
_TRUE = frozenset({"1", "true", "True"})
_CHUNK = 1024 * 1024


class HubError(Exception):
    """An error answer, in the Hub's shape."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        """Describe the answer.

        Args:
            status: HTTP status.
            message: human message, sent as `X-Error-Message` and as `{"error": ...}`.
            code: the Hub's `X-Error-Code`, which huggingface_hub maps to its exception types.
            headers: extra headers (e.g. `X-Repo-Commit` on a missing entry).
        """
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}

    def response(self) -> Response:
        """The error as a response."""
        response = Response(json.dumps({"error": self.message}), self.status, mimetype="application/json")
        response.headers["X-Error-Message"] = self.message
        if self.code is not None:
            response.headers["X-Error-Code"] = self.code
        response.headers.update(self.headers)
        return response


class HubSimulator:
    """The WSGI app. Build it with `create_app`."""

    def __init__(self, models_root: Path, *, tree_page_size: int = TREE_PAGE_SIZE) -> None:
        """Serve the repos under `models_root`.

        Args:
            models_root: folder of `<org>/<name>/` repos, with the optional `.hubsim-tokens.json`.
            tree_page_size: entries per page of the tree listing (the Hub uses 1000; tests make it small).
        """
        self.models_root = models_root
        self._store = RepoStore(models_root)
        self._tree_page_size = tree_page_size
        self._routes = Map(
            [
                Rule("/api/whoami-v2", endpoint="whoami", methods=["GET"]),
                Rule("/api/agent-harnesses", endpoint="agent_harnesses", methods=["GET"]),
                Rule("/api/models/<org>/<name>", endpoint="model_info", methods=["GET"]),
                Rule("/api/models/<org>/<name>/revision/<path:revision>", endpoint="model_info", methods=["GET"]),
                Rule("/api/models/<org>/<name>/tree/<revision>", endpoint="tree", methods=["GET"]),
                Rule("/api/models/<org>/<name>/tree/<revision>/<path:path>", endpoint="tree", methods=["GET"]),
                Rule("/api/models/<org>/<name>/paths-info/<revision>", endpoint="paths_info", methods=["POST"]),
                Rule("/api/models/<org>/<name>/refs", endpoint="refs", methods=["GET"]),
                Rule("/api/models/<org>/<name>/auth-check", endpoint="auth_check", methods=["GET"]),
                Rule("/<org>/<name>/resolve/<revision>/<path:path>", endpoint="resolve", methods=["GET", "HEAD"]),
            ],
            # The Hub answers odd slashes with a 404, never a redirect.
            strict_slashes=False,
            merge_slashes=False,
        )
        self._handlers: dict[str, Callable[..., Response]] = {
            "whoami": self._whoami,
            "agent_harnesses": self._agent_harnesses,
            "model_info": self._model_info,
            "tree": self._tree,
            "paths_info": self._paths_info,
            "refs": self._refs,
            "auth_check": self._auth_check,
            "resolve": self._resolve,
        }

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Answer one WSGI request."""
        request = Request(environ)
        try:
            endpoint, args = self._routes.bind_to_environ(environ).match()
            response = self._handlers[str(endpoint)](request, **args)
        except HubError as error:
            response = error.response()
        except RepoSettingsError as error:
            # A broken settings file is the operator's mistake: say which one instead of a bare traceback.
            response = HubError(500, str(error)).response()
        except HTTPException as error:
            response = HubError(error.code or 500, error.description or error.name).response()
        return response(environ, start_response)

    # Auth and lookups.

    def _token(self, request: Request) -> str | None:
        """The caller's token, None when anonymous; an unknown or malformed token is refused with 401."""
        header = request.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in load_tokens(self.models_root):
            raise HubError(401, INVALID_CREDENTIALS)
        return token.strip()

    def _repo(self, org: str, name: str, token: str | None, revision: str | None = None) -> RepoSnapshot:
        """The repo if the caller may see it at `revision`; raises the Hub's RepoNotFound or RevisionNotFound."""
        snapshot = self._store.get(f"{org}/{name}")
        if snapshot is None or (snapshot.settings.private and token not in snapshot.settings.authorized_tokens):
            # Like the Hub: 401 to anonymous callers (it might exist for someone), 404 to authenticated ones.
            raise HubError(401 if token is None else 404, "Repository not found", "RepoNotFound")
        if revision is not None and revision not in (DEFAULT_BRANCH, snapshot.sha):
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return snapshot

    @staticmethod
    def _check_file_access(snapshot: RepoSnapshot, token: str | None) -> None:
        """Refuse the files of a gated repo to callers without an authorized token."""
        if not snapshot.settings.gated or token in snapshot.settings.authorized_tokens:
            return
        if token is None:
            message = (
                f"Access to model {snapshot.repo_id} is restricted. You must have access to it and be authenticated "
                "to access it. Please log in."
            )
            raise HubError(401, message, "GatedRepo")
        message = (
            f"Access to model {snapshot.repo_id} is restricted and you are not in the authorized list. "
            f"Visit /{snapshot.repo_id} to ask for access."
        )
        raise HubError(403, message, "GatedRepo")

    # Routes.

    def _whoami(self, request: Request) -> Response:
        token = self._token(request)
        if token is None:
            raise HubError(401, INVALID_CREDENTIALS)
        username = load_tokens(self.models_root)[token]
        return _json(
            {
                "type": "user",
                "id": username,
                "name": username,
                "fullname": username,
                "email": None,
                "emailVerified": False,
                "canPay": False,
                "isPro": False,
                "periodEnd": None,
                "avatarUrl": "",
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "hubsim", "role": "read"}},
            }
        )

    @staticmethod
    def _agent_harnesses(_request: Request) -> Response:
        # huggingface_hub fetches this registry once a day to tag its user agent; an empty one detects no agent.
        return _json({"standardEnvVars": [], "harnesses": {}})

    def _model_info(self, request: Request, org: str, name: str, revision: str = DEFAULT_BRANCH) -> Response:
        snapshot = self._repo(org, name, self._token(request), revision)
        expand = request.args.getlist("expand") + request.args.getlist("expand[]")
        unknown = sorted(set(expand) - EXPAND_PROPERTIES)
        if unknown:
            raise HubError(400, f"Invalid expand properties: {', '.join(unknown)}")
        info = _model_properties(snapshot, blobs=request.args.get("blobs") in _TRUE)
        if expand:
            # As on the Hub: with `expand`, only the ids and the requested properties come back.
            info = {key: value for key, value in info.items() if key in {"_id", "id", *expand}}
        elif request.args.get("securityStatus") in _TRUE:
            info["securityRepoStatus"] = {"scansDone": True, "filesWithIssues": []}
        return _json(info)

    def _tree(self, request: Request, org: str, name: str, revision: str, path: str = "") -> Response:
        path = _clean_path(path.rstrip("/"), allow_root=True)
        snapshot = self._repo(org, name, self._token(request), revision)
        if path and path not in snapshot.folders:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": snapshot.sha})
        recursive = request.args.get("recursive") in _TRUE
        expand = request.args.get("expand") in _TRUE
        entries = _tree_entries(snapshot, path, recursive=recursive)
        page_size = min(self._tree_page_size, TREE_PAGE_SIZE_EXPANDED) if expand else self._tree_page_size
        start = _decode_cursor(request.args.get("cursor"))
        page = entries[start : start + page_size]
        response = _json([_entry_json(snapshot, entry, expand=expand) for entry in page])
        if start + page_size < len(entries):
            query = [(key, value) for key, value in request.args.items(multi=True) if key != "cursor"]
            query.append(("cursor", _encode_cursor(start + page_size)))
            response.headers["Link"] = f'<{request.base_url}?{urlencode(query)}>; rel="next"'
        return response

    def _paths_info(self, request: Request, org: str, name: str, revision: str) -> Response:
        snapshot = self._repo(org, name, self._token(request), revision)
        expand = request.form.get("expand") in _TRUE
        found = []
        for raw in request.form.getlist("paths"):
            path = _clean_path(raw.strip("/"), allow_root=True)
            if path in snapshot.files or (path and path in snapshot.folders):
                found.append(_entry_json(snapshot, path, expand=expand))
        return _json(found)

    def _refs(self, request: Request, org: str, name: str) -> Response:
        snapshot = self._repo(org, name, self._token(request))
        refs: dict[str, Any] = {
            "branches": [{"name": DEFAULT_BRANCH, "ref": f"refs/heads/{DEFAULT_BRANCH}", "targetCommit": snapshot.sha}],
            "converts": [],
            "tags": [],
        }
        if request.args.get("include_prs") in _TRUE:
            refs["pullRequests"] = []
        return _json(refs)

    def _auth_check(self, request: Request, org: str, name: str) -> Response:
        token = self._token(request)
        self._check_file_access(self._repo(org, name, token), token)
        return _json({})

    def _resolve(self, request: Request, org: str, name: str, revision: str, path: str) -> Response:
        path = _clean_path(path, allow_root=False)
        token = self._token(request)
        snapshot = self._repo(org, name, token, revision)
        self._check_file_access(snapshot, token)
        repo_file = snapshot.files.get(path)
        if repo_file is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": snapshot.sha})
        return _file_response(request, snapshot, repo_file)


def create_app(models_root: Path, *, tree_page_size: int = TREE_PAGE_SIZE) -> HubSimulator:
    """Build the Hub simulator over a folder of repos.

    Args:
        models_root: folder of `<org>/<name>/` repos (see docs/contracts.md, "Hub simulator model folder").
        tree_page_size: entries per page of the tree listing.

    Returns:
        The WSGI app.
    """
    return HubSimulator(models_root, tree_page_size=tree_page_size)


def _json(value: Any) -> Response:
    return Response(json.dumps(value), 200, mimetype="application/json")


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _clean_path(path: str, *, allow_root: bool) -> str:
    """Refuse what the Hub refuses in a path in the repo: traversal, empty or dot segments, backslashes, NULs."""
    if path == "" and allow_root:
        return path
    segments = path.split("/")
    if any(segment in ("", ".", "..") or "\\" in segment or "\0" in segment for segment in segments):
        raise HubError(400, f"Invalid path: {path!r}")
    return path


def _model_properties(snapshot: RepoSnapshot, *, blobs: bool) -> dict[str, Any]:
    """Everything the Hub tells about a model, under the Hub's keys."""
    org = snapshot.repo_id.split("/")[0]
    card = snapshot.card_data()
    model_index = snapshot.read_json("model_index.json")
    config = snapshot.read_json("config.json")
    tags: list[str] = []
    library_name: str | None = None
    pipeline_tag: str | None = None
    hub_config: dict[str, Any] = {}
    if isinstance(model_index, dict):
        library_name, pipeline_tag = "diffusers", "text-to-image"
        class_name = model_index.get("_class_name")
        hub_config["diffusers"] = {"_class_name": class_name}
        tags += ["diffusers", f"diffusers:{class_name}"]
    elif isinstance(config, dict) and config.get("architectures"):
        library_name = "transformers"
        hub_config["architectures"] = config["architectures"]
        tags.append("transformers")
    if card is not None:
        # The card's own metadata wins, as on the Hub.
        library_name = card.get("library_name", library_name)
        pipeline_tag = card.get("pipeline_tag", pipeline_tag)
        card_tags = card.get("tags")
        tags += [tag for tag in (card_tags if isinstance(card_tags, list) else []) if isinstance(tag, str)]
    if any(path.endswith(".safetensors") for path in snapshot.files):
        tags.append("safetensors")
    if pipeline_tag is not None:
        tags.append(pipeline_tag)
    tags.append("region:us")
    parameters = snapshot.safetensors_parameters()
    info: dict[str, Any] = {
        "_id": snapshot.sha[:24],
        "id": snapshot.repo_id,
        "modelId": snapshot.repo_id,
        "author": org,
        "sha": snapshot.sha,
        "lastModified": _iso(snapshot.last_modified),
        "createdAt": _iso(snapshot.created_at),
        "private": snapshot.settings.private,
        "gated": snapshot.settings.gated,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "library_name": library_name,
        "pipeline_tag": pipeline_tag,
        "tags": list(dict.fromkeys(tags)),
        "cardData": card,
        "config": hub_config or None,
        "siblings": [_sibling(repo_file, blobs=blobs) for repo_file in snapshot.files.values()],
        "spaces": [],
        "usedStorage": sum(repo_file.size for repo_file in snapshot.files.values()),
        "safetensors": {"parameters": parameters, "total": sum(parameters.values())} if parameters else None,
    }
    # The Hub leaves out what a model does not have rather than sending nulls.
    return {key: value for key, value in info.items() if value is not None}


def _sibling(repo_file: RepoFile, *, blobs: bool) -> dict[str, Any]:
    sibling: dict[str, Any] = {"rfilename": repo_file.path}
    if blobs:
        sibling.update(blobId=repo_file.blob_id, size=repo_file.size)
        if repo_file.lfs:
            pointer_size = len(repo_file.lfs_pointer)
            sibling["lfs"] = {"sha256": repo_file.sha256, "size": repo_file.size, "pointerSize": pointer_size}
    return sibling


def _tree_entries(snapshot: RepoSnapshot, folder: str, *, recursive: bool) -> list[str]:
    """Paths listed under `folder`: its children (folders first, as the Hub does), or all its descendants."""
    prefix = f"{folder}/" if folder else ""
    below = [path for path in [*snapshot.folders, *snapshot.files] if path and path.startswith(prefix)]
    if recursive:
        return sorted(below)
    children = [path for path in below if "/" not in path[len(prefix) :]]
    return sorted(children, key=lambda path: (path not in snapshot.folders, path))


def _entry_json(snapshot: RepoSnapshot, path: str, *, expand: bool) -> dict[str, Any]:
    """A tree entry as the Hub lists it (`lastCommit` and the security scan only with `expand`)."""
    repo_file = snapshot.files.get(path)
    if repo_file is None:
        entry: dict[str, Any] = {"type": "directory", "oid": snapshot.folders[path], "size": 0, "path": path}
    else:
        entry = {"type": "file", "oid": repo_file.blob_id, "size": repo_file.size, "path": path}
        if repo_file.lfs:
            entry["lfs"] = {"oid": repo_file.sha256, "size": repo_file.size, "pointerSize": len(repo_file.lfs_pointer)}
    if expand:
        entry["lastCommit"] = {"id": snapshot.sha, "title": "Upload model", "date": _iso(snapshot.last_modified)}
        if repo_file is not None:
            entry["securityFileStatus"] = {
                "status": "safe",
                "avScan": {"virusFound": False, "virusNames": None},
                "pickleImportScan": None,
            }
    return entry


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _decode_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(cursor.encode()))["offset"]
    except (binascii.Error, ValueError, KeyError, TypeError) as error:
        raise HubError(400, "Invalid cursor") from error
    if not isinstance(offset, int) or offset < 0:
        raise HubError(400, "Invalid cursor")
    return offset


def _file_response(request: Request, snapshot: RepoSnapshot, repo_file: RepoFile) -> Response:
    """The file's bytes (or one range of them) with the headers huggingface_hub reads."""
    size = repo_file.size
    filename = repo_file.path.rsplit("/", 1)[-1]
    headers = Headers(
        {
            "X-Repo-Commit": snapshot.sha,
            "ETag": f'"{repo_file.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": mimetypes.guess_type(filename)[0] or "application/octet-stream",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(filename)}; filename=\"{quote(filename)}\"",
            "Cache-Control": "private, max-age=0, must-revalidate",
        }
    )
    if repo_file.lfs:
        headers["X-Linked-Etag"] = f'"{repo_file.sha256}"'
        headers["X-Linked-Size"] = str(size)
    start, stop, status = 0, size, 200
    ranges = parse_range_header(request.headers.get("Range"))
    # A malformed or multi-part Range is ignored (the full file is sent), as HTTP allows.
    if ranges is not None and len(ranges.ranges) == 1:
        bounds = ranges.range_for_length(size)
        if bounds is None:
            unsatisfiable = {"Content-Range": f"bytes */{size}", "X-Repo-Commit": snapshot.sha}
            raise HubError(416, "Requested range not satisfiable", headers=unsatisfiable)
        start, stop, status = bounds[0], bounds[1], 206
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    headers["Content-Length"] = str(stop - start)
    body: Iterable[bytes] = () if request.method == "HEAD" else _read_range(repo_file.disk_path, start, stop)
    return Response(body, status, headers=headers, direct_passthrough=True)


def _read_range(disk_path: Path, start: int, stop: int) -> Iterator[bytes]:
    with disk_path.open("rb") as handle:
        handle.seek(start)
        remaining = stop - start
        while remaining > 0:
            chunk = handle.read(min(_CHUNK, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk

"""The Hub simulator, driven by the real huggingface_hub client over HTTP on a local port."""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import httpx
import pytest
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder
from werkzeug.serving import make_server

from simulators.hub.app import create_app
from simulators.hub.repo import commit_sha

REPO_ROOT = Path(__file__).resolve().parents[2]
PUBLIC, GATED, PRIVATE, PLAIN = "acme/tiny", "acme/tiny-gated", "acme/tiny-private", "acme/encoder-only"
TOKENS = {"hf_accepted": "alice", "hf_owner": "olivia", "hf_other": "oscar"}
WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
TREE_PAGE_SIZE = 2


def _write_pipeline(folder: Path, weights: bytes) -> None:
    """A repo shaped like a diffusers pipeline; the weights are random bytes because the simulator never loads them."""
    files = {
        "model_index.json": json.dumps(
            {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DModel"]}
        ),
        "unet/config.json": json.dumps({"_class_name": "UNet2DConditionModel", "sample_size": 8}),
        "scheduler/scheduler_config.json": json.dumps({"_class_name": "PNDMScheduler"}),
        "README.md": "---\nlicense: mit\ntags:\n- tiny\n---\n# Tiny\n",
    }
    for path, text in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)
    (folder / WEIGHTS).write_bytes(weights)


def _safetensors(tensors: dict[str, tuple[str, list[int]]]) -> bytes:
    """A valid safetensors file with zeroed data."""
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = 4 * (shape[0] * shape[1])
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header).encode()
    return len(encoded).to_bytes(8, "little") + encoded + bytes(offset)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any lookup of a host other than the local simulator, and keep the client from phoning home."""
    real_getaddrinfo = socket.getaddrinfo

    def local_only(host: object, *args: object, **kwargs: object) -> object:
        if host not in ("127.0.0.1", "localhost", b"127.0.0.1", b"localhost"):
            raise OSError(f"test tried to reach {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", local_only)
    # Its user agent would otherwise fetch the agent registry from huggingface.co (constants.ENDPOINT).
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)


@pytest.fixture(scope="module")
def weights() -> bytes:
    return hashlib.sha256(b"seed").digest() * 256  # 8 KiB, deterministic


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory, weights: bytes) -> Path:
    root = tmp_path_factory.mktemp("models")
    (root / ".hubsim-tokens.json").write_text(json.dumps(TOKENS))
    for repo_id, settings in [
        (PUBLIC, None),
        (GATED, {"gated": "auto", "private": False, "authorized_tokens": ["hf_accepted"]}),
        (PRIVATE, {"gated": False, "private": True, "authorized_tokens": ["hf_owner"]}),
    ]:
        folder = root / repo_id
        folder.mkdir(parents=True)
        _write_pipeline(folder, weights)
        if settings is not None:
            (folder / ".hubsim.json").write_text(json.dumps(settings))
    plain = root / PLAIN
    plain.mkdir(parents=True)
    (plain / "config.json").write_text(json.dumps({"architectures": ["CLIPTextModel"]}))
    (plain / "model.safetensors").write_bytes(_safetensors({"a": ("F32", [2, 3]), "b": ("F16", [4, 1])}))
    return root


@pytest.fixture(scope="module")
def hub_url(models_root: Path) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, create_app(models_root, tree_page_size=TREE_PAGE_SIZE), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()
    server.server_close()


@pytest.fixture
def api(hub_url: str) -> HfApi:
    # token=False: never pick up a token from the machine running the tests.
    return HfApi(endpoint=hub_url, token=False)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    return tmp_path / "cache"


class Downloader(Protocol):
    def __call__(self, repo_id: str, filename: str, *, revision: str | None = None, token: str | bool = False) -> Path:
        """Download one file with hf_hub_download from the simulator into the test's cache."""
        ...


@pytest.fixture
def download(hub_url: str, cache_dir: Path) -> Downloader:
    def fetch(repo_id: str, filename: str, *, revision: str | None = None, token: str | bool = False) -> Path:
        return Path(
            hf_hub_download(repo_id, filename, revision=revision, token=token, endpoint=hub_url, cache_dir=cache_dir)
        )

    return fetch


def _raw_get(hub_url: str, path: str) -> tuple[int, bytes]:
    """A GET with the path sent byte for byte (httpx would normalise `..` away before sending)."""
    parts = urlsplit(hub_url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _expected_sha(folder: Path) -> str:
    files = {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in folder.rglob("*")
        if path.is_file() and path.name != ".hubsim.json"
    }
    return commit_sha(files)


def _git_blob(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data, usedforsecurity=False).hexdigest()


# Model info.


def test_model_info_describes_a_diffusers_pipeline(api: HfApi, models_root: Path) -> None:
    info = api.model_info(PUBLIC)

    assert info.id == PUBLIC
    assert info.author == "acme"
    assert info.sha == _expected_sha(models_root / PUBLIC)
    assert re.fullmatch(r"[0-9a-f]{40}", info.sha or "")
    assert info.library_name == "diffusers"
    assert info.pipeline_tag == "text-to-image"
    assert info.private is False
    assert info.gated is False
    assert info.disabled is False
    assert info.card_data is not None
    assert info.card_data.license == "mit"
    assert {"diffusers", "diffusers:StableDiffusionPipeline", "text-to-image", "tiny"} <= set(info.tags or [])
    assert sorted(s.rfilename for s in info.siblings or []) == [
        "README.md",
        "model_index.json",
        "scheduler/scheduler_config.json",
        "unet/config.json",
        WEIGHTS,
    ]
    assert info.last_modified is not None
    assert api.model_info(PUBLIC).sha == info.sha


def test_model_info_sha_is_the_same_for_the_same_content(api: HfApi) -> None:
    # The private repo holds the same files as the public one.
    assert api.model_info(PRIVATE, token="hf_owner").sha == api.model_info(PUBLIC).sha


def test_model_info_files_metadata_reports_sizes_and_lfs(api: HfApi, models_root: Path, weights: bytes) -> None:
    siblings = {s.rfilename: s for s in api.model_info(PUBLIC, files_metadata=True).siblings or []}

    weights_sibling = siblings[WEIGHTS]
    assert weights_sibling.size == len(weights)
    assert weights_sibling.lfs is not None
    assert weights_sibling.lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert weights_sibling.lfs.size == len(weights)
    config = (models_root / PUBLIC / "unet/config.json").read_bytes()
    assert siblings["unet/config.json"].lfs is None
    assert siblings["unet/config.json"].size == len(config)
    assert siblings["unet/config.json"].blob_id == _git_blob(config)


def test_model_info_expand_returns_only_what_was_asked(api: HfApi) -> None:
    info = api.model_info(PUBLIC, expand=["sha", "gated"])

    assert info.sha is not None
    assert info.gated is False
    assert info.siblings is None
    assert info.library_name is None


def test_model_info_of_a_non_pipeline_repo(api: HfApi) -> None:
    info = api.model_info(PLAIN)

    assert info.library_name == "transformers"
    assert info.pipeline_tag is None
    assert "diffusers" not in (info.tags or [])
    assert info.safetensors is not None
    assert info.safetensors.parameters == {"F32": 6, "F16": 4}
    assert info.safetensors.total == sum(info.safetensors.parameters.values())


def test_model_info_by_commit_sha_and_unknown_revision(api: HfApi) -> None:
    sha = api.model_info(PUBLIC).sha

    assert api.model_info(PUBLIC, revision=sha).sha == sha
    with pytest.raises(RevisionNotFoundError):
        api.model_info(PUBLIC, revision="v9")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(PUBLIC, revision="0" * 40)


def test_sha_follows_the_content(api: HfApi, models_root: Path, weights: bytes) -> None:
    folder = models_root / "acme" / "changing"
    folder.mkdir()
    _write_pipeline(folder, weights)
    before = api.model_info("acme/changing").sha

    (folder / "unet/config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel", "sample_size": 16}))

    assert api.model_info("acme/changing").sha not in (before, None)
    shutil.rmtree(folder)


def test_broken_settings_file_is_a_500_naming_it(api: HfApi, models_root: Path, weights: bytes) -> None:
    folder = models_root / "acme" / "broken"
    folder.mkdir()
    _write_pipeline(folder, weights)
    (folder / ".hubsim.json").write_text(json.dumps({"gated": "sometimes"}))

    with pytest.raises(HfHubHTTPError) as error:
        api.model_info("acme/broken")

    assert error.value.response.status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    assert ".hubsim.json" in error.value.response.headers["X-Error-Message"]
    shutil.rmtree(folder)


# Listing.


def test_list_repo_tree_lists_folders_first_then_files(api: HfApi, models_root: Path, weights: bytes) -> None:
    root = list(api.list_repo_tree(PUBLIC))

    assert [(type(entry), entry.path) for entry in root] == [
        (RepoFolder, "scheduler"),
        (RepoFolder, "unet"),
        (RepoFile, "README.md"),
        (RepoFile, "model_index.json"),
    ]
    unet = {entry.path: entry for entry in api.list_repo_tree(PUBLIC, path_in_repo="unet")}
    assert set(unet) == {"unet/config.json", WEIGHTS}
    weights_entry = unet[WEIGHTS]
    assert isinstance(weights_entry, RepoFile)
    assert weights_entry.size == len(weights)
    assert weights_entry.lfs is not None
    assert weights_entry.lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert weights_entry.lfs.pointer_size > 0


def test_list_repo_tree_recursive_pages_through_everything(api: HfApi) -> None:
    # The app under test pages every 2 entries, so this walks 4 pages through the `Link` header.
    entries = list(api.list_repo_tree(PUBLIC, recursive=True))

    assert [entry.path for entry in entries] == [
        "README.md",
        "model_index.json",
        "scheduler",
        "scheduler/scheduler_config.json",
        "unet",
        "unet/config.json",
        WEIGHTS,
    ]
    files = [entry.path for entry in entries if isinstance(entry, RepoFile)]
    assert api.list_repo_files(PUBLIC) == files


def test_list_repo_tree_expand_and_missing_folder(api: HfApi) -> None:
    entries = list(api.list_repo_tree(PUBLIC, path_in_repo="unet", expand=True))

    assert all(entry.last_commit is not None for entry in entries)
    assert len(httpx.get(f"{api.endpoint}/api/models/{PUBLIC}/tree/main/unet/").json()) == len(entries)
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(PUBLIC, path_in_repo="vae"))


def test_tree_ids_match_git(api: HfApi, models_root: Path, tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    work = tmp_path / "git"
    shutil.copytree(models_root / PUBLIC / "scheduler", work / "scheduler")
    git = ["git", "-C", str(work)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "scheduler"], check=True)
    tree = subprocess.run([*git, "write-tree"], check=True, capture_output=True, text=True).stdout.strip()
    listing = subprocess.run([*git, "ls-tree", tree, "scheduler"], check=True, capture_output=True, text=True)
    expected = listing.stdout.split()[2]

    folder = next(entry for entry in api.list_repo_tree(PUBLIC) if entry.path == "scheduler")

    assert isinstance(folder, RepoFolder)
    assert folder.tree_id == expected


def test_paths_info_and_refs(api: HfApi) -> None:
    infos = api.get_paths_info(PUBLIC, ["unet", "model_index.json", "nope.txt"])
    refs = api.list_repo_refs(PUBLIC)

    assert [(type(info), info.path) for info in infos] == [(RepoFolder, "unet"), (RepoFile, "model_index.json")]
    assert [(branch.name, branch.target_commit) for branch in refs.branches] == [("main", api.model_info(PUBLIC).sha)]


# Downloads.


def test_hf_hub_download_fetches_the_file(models_root: Path, download: Downloader) -> None:
    path = download(PUBLIC, "model_index.json")

    assert path.read_bytes() == (models_root / PUBLIC / "model_index.json").read_bytes()


def test_hf_hub_download_by_commit_sha(api: HfApi, weights: bytes, download: Downloader) -> None:
    sha = api.model_info(PUBLIC).sha

    path = download(PUBLIC, WEIGHTS, revision=sha)

    assert path.read_bytes() == weights
    assert sha in path.parts


def test_hf_hub_download_unknown_revision_and_missing_file(download: Downloader) -> None:
    with pytest.raises(RevisionNotFoundError):
        download(PUBLIC, "model_index.json", revision="nope")
    with pytest.raises(EntryNotFoundError):
        download(PUBLIC, "vae/config.json")


def test_snapshot_download_with_allow_patterns(hub_url: str, cache_dir: Path, weights: bytes) -> None:
    folder = Path(
        snapshot_download(
            PUBLIC,
            endpoint=hub_url,
            cache_dir=cache_dir,
            token=False,
            allow_patterns=["model_index.json", "unet/*"],
        )
    )

    downloaded = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    assert downloaded == ["model_index.json", "unet/config.json", WEIGHTS]
    assert (folder / WEIGHTS).read_bytes() == weights


def test_file_metadata_headers(hub_url: str, models_root: Path, weights: bytes) -> None:
    sha = _expected_sha(models_root / PUBLIC)
    lfs = get_hf_file_metadata(hf_hub_url(PUBLIC, WEIGHTS, endpoint=hub_url), token=False)
    plain = get_hf_file_metadata(hf_hub_url(PUBLIC, "model_index.json", endpoint=hub_url), token=False)
    head = httpx.head(hf_hub_url(PUBLIC, WEIGHTS, endpoint=hub_url))

    assert (lfs.commit_hash, lfs.etag, lfs.size) == (sha, hashlib.sha256(weights).hexdigest(), len(weights))
    index = (models_root / PUBLIC / "model_index.json").read_bytes()
    assert (plain.commit_hash, plain.etag, plain.size) == (sha, _git_blob(index), len(index))
    assert head.status_code == HTTPStatus.OK
    assert head.headers["ETag"] == f'"{hashlib.sha256(weights).hexdigest()}"'
    assert head.headers["X-Linked-Etag"] == head.headers["ETag"]
    assert head.headers["X-Linked-Size"] == str(len(weights))
    assert head.headers["Content-Length"] == str(len(weights))
    assert head.headers["Accept-Ranges"] == "bytes"
    assert head.content == b""


def test_range_requests(hub_url: str, weights: bytes) -> None:
    url = hf_hub_url(PUBLIC, WEIGHTS, endpoint=hub_url)

    middle = httpx.get(url, headers={"Range": "bytes=10-19"})
    tail = httpx.get(url, headers={"Range": "bytes=-5"})
    resumed = httpx.get(url, headers={"Range": f"bytes={len(weights) - 3}-"})
    beyond = httpx.get(url, headers={"Range": f"bytes={len(weights)}-"})

    assert middle.status_code == HTTPStatus.PARTIAL_CONTENT
    assert middle.content == weights[10:20]
    assert middle.headers["Content-Range"] == f"bytes 10-19/{len(weights)}"
    assert middle.headers["Content-Length"] == "10"
    assert (tail.status_code, tail.content) == (HTTPStatus.PARTIAL_CONTENT, weights[-5:])
    assert (resumed.status_code, resumed.content) == (HTTPStatus.PARTIAL_CONTENT, weights[-3:])
    assert beyond.status_code == HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE
    assert beyond.headers["Content-Range"] == f"bytes */{len(weights)}"


# Access control.


def test_missing_repo_is_repository_not_found(api: HfApi, download: Downloader) -> None:
    with pytest.raises(RepositoryNotFoundError) as anonymous:
        api.model_info("acme/nope")
    with pytest.raises(RepositoryNotFoundError) as authenticated:
        api.model_info("acme/nope", token="hf_other")
    with pytest.raises(RepositoryNotFoundError) as downloading:
        download("acme/nope", "model_index.json")

    assert anonymous.value.response.status_code == HTTPStatus.UNAUTHORIZED
    assert authenticated.value.response.status_code == HTTPStatus.NOT_FOUND
    assert not isinstance(downloading.value, GatedRepoError)


def test_gated_repo_info_is_public_but_files_need_access(api: HfApi, download: Downloader) -> None:
    assert api.model_info(GATED).gated == "auto"
    assert len(list(api.list_repo_tree(GATED, recursive=True))) == len(list(api.list_repo_tree(PUBLIC, recursive=True)))

    with pytest.raises(GatedRepoError) as anonymous:
        download(GATED, "model_index.json")
    with pytest.raises(GatedRepoError) as unauthorized:
        download(GATED, "model_index.json", token="hf_other")
    path = download(GATED, "model_index.json", token="hf_accepted")

    assert anonymous.value.response.status_code == HTTPStatus.UNAUTHORIZED
    assert unauthorized.value.response.status_code == HTTPStatus.FORBIDDEN
    assert json.loads(path.read_text())["_class_name"] == "StableDiffusionPipeline"


def test_auth_check_matches_file_access(api: HfApi) -> None:
    api.auth_check(PUBLIC)
    api.auth_check(GATED, token="hf_accepted")
    with pytest.raises(GatedRepoError):
        api.auth_check(GATED, token="hf_other")
    with pytest.raises(GatedRepoError):
        api.auth_check(GATED)
    with pytest.raises(RepositoryNotFoundError):
        api.auth_check(PRIVATE, token="hf_other")


def test_private_repo_is_hidden_but_from_its_owner(api: HfApi, weights: bytes, download: Downloader) -> None:
    for token in (False, "hf_other", "hf_accepted"):
        with pytest.raises(RepositoryNotFoundError):
            api.model_info(PRIVATE, token=token)
        with pytest.raises(RepositoryNotFoundError):
            list(api.list_repo_tree(PRIVATE, token=token))
    with pytest.raises(RepositoryNotFoundError):
        download(PRIVATE, WEIGHTS, token="hf_other")

    assert api.model_info(PRIVATE, token="hf_owner").private is True
    assert download(PRIVATE, WEIGHTS, token="hf_owner").read_bytes() == weights


def test_invalid_token_is_refused_everywhere(api: HfApi, download: Downloader) -> None:
    with pytest.raises(HfHubHTTPError) as info:
        api.model_info(PUBLIC, token="hf_forged")
    with pytest.raises(HfHubHTTPError) as downloading:
        download(PUBLIC, "model_index.json", token="hf_forged")
    with pytest.raises(HfHubHTTPError) as whoami:
        api.whoami(token="hf_forged", cache=False)

    for error in (info.value, downloading.value):
        assert error.response.status_code == HTTPStatus.UNAUTHORIZED
        assert not isinstance(error, RepositoryNotFoundError)
        assert error.response.headers["X-Error-Message"] == "Invalid credentials in Authorization header"
    assert whoami.value.response.status_code == HTTPStatus.UNAUTHORIZED
    assert api.whoami(token="hf_other", cache=False)["name"] == "oscar"


def test_agent_registry_is_empty(hub_url: str) -> None:
    assert httpx.get(f"{hub_url}/api/agent-harnesses").json() == {"standardEnvVars": [], "harnesses": {}}


# What is never served.


def test_simulator_settings_are_never_served(api: HfApi, hub_url: str, download: Downloader) -> None:
    with pytest.raises(EntryNotFoundError):
        download(GATED, ".hubsim.json", token="hf_accepted")
    assert httpx.get(f"{hub_url}/{GATED}/resolve/main/.hubsim.json").status_code == HTTPStatus.UNAUTHORIZED
    assert httpx.get(f"{hub_url}/acme/.hubsim-tokens.json/resolve/main/x").status_code == HTTPStatus.UNAUTHORIZED
    assert ".hubsim.json" not in api.list_repo_files(GATED)
    assert api.get_paths_info(GATED, [".hubsim.json"]) == []


@pytest.mark.parametrize(
    "path",
    [
        f"/{PUBLIC}/resolve/main/../../tiny-private/.hubsim.json",
        f"/{PUBLIC}/resolve/main/unet/..%2F..%2F..%2Ftiny-private%2Fmodel_index.json",
        f"/{PUBLIC}/resolve/main/%2E%2E/%2E%2E/.hubsim-tokens.json",
        "/acme/%2E%2E/resolve/main/.hubsim-tokens.json",
        "/%2E%2E/acme/resolve/main/.hubsim-tokens.json",
        f"/api/models/{PUBLIC}/tree/main/..",
        f"/{PUBLIC}/resolve/main//model_index.json",
    ],
)
def test_path_traversal_is_refused(hub_url: str, path: str) -> None:
    status, body = _raw_get(hub_url, path)

    assert status in (HTTPStatus.BAD_REQUEST, HTTPStatus.UNAUTHORIZED, HTTPStatus.NOT_FOUND)
    assert b"hf_owner" not in body
    assert b"StableDiffusionPipeline" not in body


def test_command_line_prints_its_url(models_root: Path) -> None:
    command = [sys.executable, "-m", "simulators.hub", "--models-root", str(models_root), "--port", "0"]
    with subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as process:
        try:
            line = process.stdout.readline().strip() if process.stdout else ""
            assert line.startswith("HUB_SIMULATOR_URL=http://127.0.0.1:")
            url = line.split("=", 1)[1]
            assert HfApi(endpoint=url, token=False).model_info(PUBLIC).id == PUBLIC
        finally:
            process.terminate()

"""Job images: every bad input fails the job with a message naming the field; https URLs are fetched safely."""

from __future__ import annotations

import base64
import datetime
import io
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from shared.job_input import GenerateInput, task_problems
from tests.worker.conftest import PUBLIC
from tests.worker.test_tasks import data_url, sample_image, sample_mask
from worker.devices import resolve_dtype
from worker.handler import make_handler
from worker.images import ImageFetcher, ImageInputError, is_public_address, read_image
from worker.loaded_model import LoadedModel
from worker.pipeline_load import load_model
from worker.pipeline_options import LoadOptions


@pytest.fixture(scope="module")
def img2img(models_root: Path) -> LoadedModel:
    folder = models_root / PUBLIC
    return load_model(folder, PUBLIC, "cpu", resolve_dtype("cpu", None, folder), LoadOptions(task="image_to_image"))


@pytest.fixture(scope="module")
def inpaint(img2img: LoadedModel) -> LoadedModel:
    from worker.task_pipeline import task_pipeline

    return LoadedModel(
        task_pipeline(img2img.pipe, "inpainting", PUBLIC), PUBLIC, "cpu", img2img.dtype, task="inpainting"
    )


@pytest.fixture(scope="module")
def text(models_root: Path) -> LoadedModel:
    folder = models_root / PUBLIC
    return load_model(folder, PUBLIC, "cpu", resolve_dtype("cpu", None, folder))


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _run(model: LoadedModel, fetcher: ImageFetcher | None = None, **fields: Any) -> dict[str, Any]:
    payload = {"prompt": "a cat", "num_inference_steps": 2, "seed": 1, **fields}
    return make_handler(model, fetcher=fetcher)({"id": "j", "input": payload})


IMAGE = data_url(sample_image())
MASK = data_url(sample_mask())
TOO_WIDE = "data:image/png;base64," + base64.b64encode(_png(4097, 8)).decode()


@pytest.mark.parametrize(
    ("task", "fields", "message"),
    [
        ("image_to_image", {}, "image: required by an image_to_image deployment"),
        ("inpainting", {"image": IMAGE}, "mask_image: required by an inpainting deployment"),
        ("inpainting", {}, "image: required by an inpainting deployment"),
        ("image_to_image", {"mask_image": MASK}, "mask_image needs an image"),
        ("image_to_image", {"image": IMAGE, "mask_image": MASK}, "mask_image: not taken by an image_to_image"),
        ("text_to_image", {"image": IMAGE}, "image: not taken by a text_to_image deployment"),
        ("text_to_image", {"strength": 0.5}, "strength: not taken by a text_to_image deployment"),
        ("image_to_image", {"image": IMAGE, "strength": 1.5}, "strength: Input should be less than or equal to 1"),
        ("image_to_image", {"image": IMAGE, "strength": "0.5"}, "strength: Input should be a valid number"),
        ("image_to_image", {"image": "data:text/plain;base64,aGVsbG8="}, "image: Value error, must be a data:image"),
        ("image_to_image", {"image": "not base64 at all!"}, "image: Value error, must be a data:image"),
        ("image_to_image", {"image": "http://example.com/a.png"}, "image: Value error, an image URL must use https"),
        ("image_to_image", {"image": "data:image/png;base64,AAAA"}, "image: the image does not decode"),
        ("image_to_image", {"image": base64.b64encode(b"GIF89a garbage").decode()}, "image: the image does not decode"),
        ("image_to_image", {"image": "data:image/png;base64,A"}, "image: not valid base64"),
        ("image_to_image", {"image": TOO_WIDE}, "image: the image is 4097x8; at most 4096x4096"),
        ("inpainting", {"image": IMAGE, "mask_image": TOO_WIDE}, "mask_image: the image is 4097x8"),
        ("inpainting", {"image": IMAGE, "mask_image": "data:image/png;base64,AAAA"}, "mask_image: the image does not"),
        ("image_to_image", {"image": "https://10.0.0.7/a.png"}, "image: the image URL points at a private"),
        ("image_to_image", {"image": "https://169.254.169.254/a.png"}, "image: the image URL points at a private"),
        ("image_to_image", {"image": "https://127.0.0.1/a.png"}, "image: the image URL points at a private"),
        ("image_to_image", {"image": "https://[::ffff:10.0.0.1]/a"}, "image: the image URL points at a private"),
        ("image_to_image", {"image": "https://u:p@example.com/a"}, "image: an image URL must not carry credentials"),
    ],
)
def test_bad_image_inputs_fail_the_job_naming_the_field(
    request: pytest.FixtureRequest, task: str, fields: dict[str, Any], message: str
) -> None:
    model = request.getfixturevalue(
        {"image_to_image": "img2img", "inpainting": "inpaint", "text_to_image": "text"}[task]
    )
    result = _run(model, **fields)
    assert set(result) == {"error"}
    assert result["error"].startswith("invalid input: ")
    assert message in result["error"]


def test_an_image_over_20_mb_is_refused_by_the_input_model(img2img: LoadedModel) -> None:
    big = "A" * ((20 * 1024 * 1024) // 3 * 4 + 8)
    assert "image: Value error, the image must be at most 20 MB" in _run(img2img, image=big)["error"]


def test_task_problems_are_the_same_rules_the_api_validates_with() -> None:
    request = GenerateInput.model_validate({"prompt": "a", "image": IMAGE})
    assert task_problems(request, "image_to_image") == []
    assert task_problems(request, "inpainting") == ["mask_image: required by an inpainting deployment"]


def test_image_tasks_resize_the_input_to_the_requested_size(img2img: LoadedModel) -> None:
    result = _run(img2img, image=data_url(sample_image(200, 120)), width=72, height=64, strength=0.9)
    assert "error" not in result
    assert Image.open(io.BytesIO(base64.b64decode(result["images"][0]["image"]))).size == (72, 64)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("2002:0a00:0001::", False),
        # Every IPv6 embedding of the metadata address or loopback (issue 18): compatible, translated, NAT64.
        ("::a9fe:a9fe", False),
        ("::127.0.0.1", False),
        ("::ffff:0:a9fe:a9fe", False),
        ("64:ff9b::a9fe:a9fe", False),
        ("64:ff9b:1::a9fe:a9fe", False),
        ("64:ff9b:1::808:808", False),
        ("2001:0:a9fe:a9fe::1", False),
        ("2606:4700:4700::1111", True),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


def test_loopback_is_allowed_only_with_the_test_setting() -> None:
    assert is_public_address(ipaddress.ip_address("127.0.0.1"), allow_loopback=True)
    assert not is_public_address(ipaddress.ip_address("10.0.0.1"), allow_loopback=True)


# --- an https server on 127.0.0.1 with its own certificate -------------------------------------------------------


@dataclass
class ImageServer:
    """Answers ``/<name>`` from ``routes``: (status, headers, body)."""

    url: str = ""
    ca_file: str = ""
    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def __call__(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        self.hits.append(request.path)
        status, headers, body = self.routes.get(request.path, (404, {}, b""))
        return Response(body, status=status, headers=headers)(environ, start_response)


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def image_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageServer]:
    cert, key = _self_signed(tmp_path_factory.mktemp("tls"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = ImageServer(ca_file=str(cert))
    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    app.url = f"https://127.0.0.1:{server.server_port}"
    yield app
    server.shutdown()
    thread.join()


def _fetcher(server: ImageServer, **kwargs: Any) -> ImageFetcher:
    return ImageFetcher(allow_loopback=True, verify=server.ca_file, **kwargs)


def test_an_https_image_is_fetched_and_used(image_server: ImageServer, img2img: LoadedModel) -> None:
    buffer = io.BytesIO()
    sample_image(64, 64).save(buffer, format="JPEG")
    image_server.routes["/cat.jpg"] = (200, {"Content-Type": "image/jpeg"}, buffer.getvalue())
    result = _run(img2img, _fetcher(image_server), image=f"{image_server.url}/cat.jpg", strength=0.9)
    assert "error" not in result, result
    assert "/cat.jpg" in image_server.hits


def test_loopback_is_refused_by_default(image_server: ImageServer, img2img: LoadedModel) -> None:
    image_server.routes["/ok.png"] = (200, {"Content-Type": "image/png"}, _png(8, 8))
    result = _run(img2img, ImageFetcher(verify=image_server.ca_file), image=f"{image_server.url}/ok.png")
    assert "image: the image URL points at a private, loopback" in result["error"]


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ((200, {"Content-Type": "text/html"}, b"<html>"), "image: the image URL's content type is text/html"),
        ((200, {}, _png(8, 8)), "content type is"),
        ((404, {"Content-Type": "image/png"}, b""), "image: the image URL answered 404"),
        ((200, {"Content-Type": "image/png"}, b"not an image"), "image: the image does not decode"),
        ((302, {"Location": "http://127.0.0.1/x.png"}, b""), "must be an https URL (also after a redirect)"),
        ((302, {"Location": "https://10.0.0.9/x.png"}, b""), "image: the image URL points at a private"),
        ((200, {"Content-Type": "image/png"}, b"\0" * (20 * 1024 * 1024 + 1)), "image: the image is larger than 20"),
    ],
)
def test_bad_fetched_images_fail_naming_the_field(
    image_server: ImageServer, route: tuple[int, dict[str, str], bytes], message: str
) -> None:
    image_server.routes["/bad"] = route
    with pytest.raises(ImageInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_image(f"{image_server.url}/bad", "image", _fetcher(image_server))


def test_redirects_are_followed_a_few_times_each_checked(image_server: ImageServer) -> None:
    image_server.routes["/final.png"] = (200, {"Content-Type": "image/png"}, _png(16, 8))
    image_server.routes["/hop"] = (302, {"Location": "/final.png"}, b"")
    assert read_image(f"{image_server.url}/hop", "image", _fetcher(image_server)).size == (16, 8)
    image_server.routes["/loop"] = (302, {"Location": "/loop"}, b"")
    with pytest.raises(ImageInputError, match="image: more than 3 redirects"):
        read_image(f"{image_server.url}/loop", "image", _fetcher(image_server))


def test_a_name_that_resolves_to_a_private_address_is_refused(image_server: ImageServer) -> None:
    fetcher = _fetcher(image_server, resolve=lambda host, port: ["192.168.0.10"])
    with pytest.raises(ImageInputError, match="mask_image: the image URL points at a private"):
        read_image("https://images.example.com/a.png", "mask_image", fetcher)


def test_the_connected_peer_is_checked_too(image_server: ImageServer) -> None:
    """DNS rebinding: the check saw a public address, the connection reached loopback."""
    image_server.routes["/ok.png"] = (200, {"Content-Type": "image/png"}, _png(8, 8))
    fetcher = ImageFetcher(allow_loopback=False, verify=image_server.ca_file, resolve=lambda host, port: ["8.8.8.8"])
    with pytest.raises(ImageInputError, match="image: the image URL points at a private, loopback"):
        read_image(f"{image_server.url}/ok.png", "image", fetcher)

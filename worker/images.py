"""Read the images of a job (``image``, ``mask_image``): decode inline base64, or fetch an https URL safely.

:mod:`shared.job_input` checked the form of each reference; here its content is checked, and every failure is an
:class:`ImageInputError` whose message starts with the field's name (the job fails with it):

- at most :data:`~shared.job_input.MAX_IMAGE_BYTES` bytes, and at most
  :data:`~shared.job_input.MAX_IMAGE_SIDE` pixels a side (read from the header, before the pixels are decoded, so
  a small file that expands into a huge bitmap is refused cheaply); it must decode as an image.
- URLs: https only; the host's addresses must all be public (no private, loopback, link-local (cloud metadata services
  live there), multicast, reserved or otherwise non-global range, nor an IPv6 address that carries such an IPv4 one in
  any embedding: :mod:`shared.address_policy`, the functions' policy too); the address the connection reached is
  checked again before the body is read, so a DNS answer that changes between the check and the connection (rebinding)
  is refused too; at most :data:`MAX_REDIRECTS` redirects, each target checked like the first URL; the answer must
  have an ``image/*`` content type and at most the byte limit (the declared length and the bytes read).
  ``allow_loopback`` (``WORKER_IMAGE_FETCH_ALLOW_LOOPBACK``, off by default) lets tests fetch from a server on
  127.0.0.1; it allows loopback only, never the other ranges.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from PIL import Image, UnidentifiedImageError

from shared.address_policy import is_public_address, parse_address
from shared.job_input import MAX_IMAGE_BYTES, MAX_IMAGE_SIDE, base64_payload, image_kind

MAX_REDIRECTS = 3
_CHUNK = 256 * 1024
_MB = 1024 * 1024

Resolver = Callable[[str, int], list[str]]


class ImageInputError(ValueError):
    """An image of the job is unusable; the message names the field."""


def _resolve(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


@dataclass
class ImageFetcher:
    """Fetches image URLs under the rules of the module docstring.

    Attributes:
        allow_loopback: also allow loopback addresses (tests only).
        verify: TLS verification for requests (``True``, or a CA bundle path: tests pass their own CA).
        timeout_s: connect and read timeout per request.
        resolve: host name → addresses (``socket.getaddrinfo`` by default).
    """

    allow_loopback: bool = False
    verify: bool | str = True
    timeout_s: float = 20.0
    resolve: Resolver = field(default=_resolve)

    def fetch(self, url: str, name: str) -> bytes:
        """The body of ``url`` after the checks.

        Raises:
            ImageInputError: any check failed, or the fetch did.
        """
        with requests.Session() as session:
            session.trust_env = False  # no proxy from the environment: the address checks must see the real peer
            for _ in range(MAX_REDIRECTS + 1):
                self._check_url(url, name)
                try:
                    response = session.get(
                        url, stream=True, allow_redirects=False, timeout=self.timeout_s, verify=self.verify
                    )
                except requests.RequestException as exc:
                    raise ImageInputError(f"{name}: the image URL could not be fetched ({type(exc).__name__})") from exc
                with response:
                    if response.is_redirect:
                        # Only a header is read from it; the target is checked like the first URL.
                        url = urljoin(url, response.headers.get("Location", ""))
                        continue
                    self._check_peer(response, name)
                    return self._body(response, name)
        raise ImageInputError(f"{name}: more than {MAX_REDIRECTS} redirects")

    def _check_url(self, url: str, name: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ImageInputError(f"{name}: an image URL must be an https URL (also after a redirect)")
        if parts.username or parts.password:
            raise ImageInputError(f"{name}: an image URL must not carry credentials")
        try:
            addresses = self.resolve(parts.hostname, parts.port or 443)
        except OSError as exc:
            raise ImageInputError(f"{name}: the image URL's host does not resolve") from exc
        if not addresses:
            raise ImageInputError(f"{name}: the image URL's host does not resolve")
        for address in addresses:
            self._check_address(address, name)

    def _check_address(self, address: str, name: str) -> None:
        try:
            parsed = parse_address(address)
        except ValueError as exc:
            raise ImageInputError(f"{name}: the image URL's host has an invalid address") from exc
        if not is_public_address(parsed, allow_loopback=self.allow_loopback):
            raise ImageInputError(
                f"{name}: the image URL points at a private, loopback, link-local or metadata address"
            )

    def _check_peer(self, response: requests.Response, name: str) -> None:
        """The address the connection really reached (a DNS answer may have changed since the check)."""
        peer = _peer_address(response)
        if peer is None:
            # Fail closed: without the peer, a rebinding DNS answer could not be told apart.
            raise ImageInputError(f"{name}: the image URL's connection address could not be checked")
        self._check_address(peer, name)

    def _body(self, response: requests.Response, name: str) -> bytes:
        if response.status_code != requests.codes.ok:
            raise ImageInputError(f"{name}: the image URL answered {response.status_code}")
        content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if not content_type.startswith("image/"):
            raise ImageInputError(f"{name}: the image URL's content type is {content_type or 'missing'}, not image/*")
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_IMAGE_BYTES:
            raise ImageInputError(f"{name}: the image is larger than {MAX_IMAGE_BYTES // _MB} MB")
        body = bytearray()
        for chunk in response.iter_content(_CHUNK):
            body += chunk
            if len(body) > MAX_IMAGE_BYTES:
                raise ImageInputError(f"{name}: the image is larger than {MAX_IMAGE_BYTES // _MB} MB")
        return bytes(body)


def _peer_address(response: requests.Response) -> str | None:
    """The peer IP of the response's socket: the connection's, or (``Connection: close``: http.client hands the
    socket to the response) the response's own. None when neither is reachable."""
    connection: Any = getattr(response.raw, "_connection", None)
    candidates = [getattr(connection, "sock", None)]
    with contextlib.suppress(AttributeError):
        candidates.append(response.raw._fp.fp.raw._sock)
    for sock in candidates:
        if sock is None:
            continue
        try:
            return str(sock.getpeername()[0])
        except OSError:
            continue
    return None


def decode_image(data: bytes, name: str) -> Image.Image:
    """Decode image bytes after the byte and side limits.

    Raises:
        ImageInputError: too large, or not an image Pillow decodes.
    """
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageInputError(f"{name}: the image is larger than {MAX_IMAGE_BYTES // _MB} MB")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
            raise ImageInputError(
                f"{name}: the image is {width}x{height}; at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} is accepted"
            )
        image.load()
    except ImageInputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageInputError(f"{name}: the image does not decode ({type(exc).__name__})") from exc
    return image


def read_image(value: str, name: str, fetcher: ImageFetcher) -> Image.Image:
    """The decoded image a reference (data URL, base64 or https URL) stands for.

    Raises:
        ImageInputError: see :func:`decode_image` and :meth:`ImageFetcher.fetch`.
    """
    try:
        kind = image_kind(value)
    except ValueError as exc:
        raise ImageInputError(f"{name}: {exc}") from exc
    if kind == "url":
        return decode_image(fetcher.fetch(value, name), name)
    try:
        data = base64.b64decode(base64_payload(value), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageInputError(f"{name}: not valid base64") from exc
    return decode_image(data, name)

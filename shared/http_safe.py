"""An HTTP POST to a user's URL that cannot be turned against our own network (SSRF), checked at send time.

The URL is checked again as at intake (``check_public_url``: https only, no credentials, no blocked names or literal
private addresses), then its host is resolved and every address it resolves to must be public: a name with any
loopback, private, link-local (169.254.169.254, the metadata server), multicast, unspecified or reserved address, or
an IPv6 address embedding one, is refused (one policy: :mod:`shared.address_policy`). The connection goes to the
address that was checked (the TLS handshake still names and verifies the host), so a DNS answer that changes between
the check and the connect (DNS rebinding) cannot move the request. Redirects are never followed.
``allow_http_loopback`` (the local stack's ``ALLOW_HTTP_LOOPBACK_WEBHOOKS``) is the only way to reach 127.0.0.1.

The resolver is a parameter, so tests can make a name resolve to 127.0.0.1 or 169.254.169.254 without DNS.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from shared.address_policy import is_public_address, parse_address
from shared.public_urls import check_public_url

Resolver = Callable[[str, int], Sequence[str]]
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
_MAX_READ = 4096


class RefusedTargetError(Exception):
    """The URL may not be called: it points (or resolves) at an address we never call."""


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (A and AAAA), as the system resolver answers."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise RefusedTargetError(f"the host does not resolve: {exc.strerror}") from exc
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class Target:
    """A checked URL: the address to connect to and what to send as host name (SNI, certificate, Host header)."""

    scheme: str
    host: str
    address: str
    port: int
    path: str


def check_target(url: str, *, allow_http_loopback: bool, resolver: Resolver = system_resolver) -> Target:
    """Check ``url`` and pick the address to connect to.

    Raises:
        RefusedTargetError: the URL, or any address its host resolves to, is not a public address.
    """
    try:
        check_public_url(url, allow_http_loopback=allow_http_loopback, field="the webhook URL")
    except ValueError as exc:
        raise RefusedTargetError(str(exc)) from exc
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:  # checked by check_public_url already; a URL stored before that check was stricter
        raise RefusedTargetError("the URL has an invalid host or port") from exc
    host = (parts.hostname or "").lower()
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if allow_http_loopback and host in _LOOPBACK_NAMES:
        return Target(parts.scheme, host, "::1" if host == "::1" else "127.0.0.1", port, path)
    addresses = list(resolver(host, port))
    if not addresses:
        raise RefusedTargetError("the host resolves to no address")
    for raw in addresses:
        try:
            address = parse_address(raw)
        except ValueError as exc:
            raise RefusedTargetError("the host resolves to an invalid address") from exc
        if not is_public_address(address):
            raise RefusedTargetError(
                "the host resolves to a loopback, private, link-local, multicast or metadata address"
            )
    return Target(parts.scheme, host, addresses[0], port, path)


@dataclass(frozen=True)
class SendResult:
    """One attempt: the status code (None when no answer came), the latency and what went wrong, if anything."""

    status_code: int | None
    latency_ms: int
    error: str | None = None


def post(
    target: Target, body: bytes, headers: Mapping[str, str], timeout_s: float, user_agent: str = "visgate-webhooks/1"
) -> SendResult:
    """POST ``body`` to the checked ``target`` (its address, never a fresh DNS answer); redirects are not followed."""
    timeout = urllib3.Timeout(total=timeout_s)
    pool: urllib3.HTTPConnectionPool
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            target.address,
            target.port,
            timeout=timeout,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
            server_hostname=target.host,
            assert_hostname=target.host,
        )
    else:
        pool = urllib3.HTTPConnectionPool(target.address, target.port, timeout=timeout, retries=False)
    default_port = 443 if target.scheme == "https" else 80
    host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
    if ":" in target.host:
        host_header = f"[{target.host}]" + ("" if target.port == default_port else f":{target.port}")
    sent = {
        **headers,
        "Host": host_header,
        "Content-Type": "application/json",
        "User-Agent": user_agent,
    }
    started = time.monotonic()
    try:
        response = pool.urlopen(
            "POST", target.path, body=body, headers=sent, redirect=False, retries=False, preload_content=False
        )
        try:
            response.read(_MAX_READ)  # enough to let the server finish; the body is not kept
        finally:
            response.release_conn()
        return SendResult(response.status, _ms(started))
    except Urllib3Timeout:
        return SendResult(None, _ms(started), f"no answer within {timeout_s:g} s")
    except (Urllib3Error, OSError, ValueError) as exc:  # ValueError: a host or header urllib3 cannot send
        return SendResult(None, _ms(started), f"connection failed: {type(exc).__name__}")
    finally:
        pool.close()


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)

"""URLs users give us that we will call or write to: webhook URLs (never into a private network: SSRF) and S3
bucket URLs. One check for every field that takes a URL; the address policy itself is shared.address_policy."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from shared.address_policy import is_public_address

_BLOCKED_HOSTS = frozenset({"localhost", "metadata", "metadata.google.internal", "metadata.goog"})
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_DNS_NAME = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*$")
# A legacy numeric IPv4 part, as inet_aton reads it: hex (0x...), octal (leading 0) or decimal.
_NUMERIC_PART = re.compile(r"^(?:0x[0-9a-f]*|0[0-7]*|[1-9][0-9]*)$")


def split_s3_url(url: str) -> tuple[str, str]:
    """The bucket and the key prefix of an ``s3://bucket/optional/prefix`` URL (one :data:`_S3_URL` accepts); the
    prefix has no leading or trailing slash (``s3://b/a/b/`` is ``("b", "a/b")``) and is empty when there is none."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


def check_public_url(value: str, *, allow_http_loopback: bool, field: str) -> str:
    """Refuse URLs that would make us call into private networks (SSRF): loopback, private, link-local, metadata;
    and URLs that could never be sent (a port that is no number or out of 1..65535)."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:  # "[::1" or a port that is no number 0..65535
        raise ValueError(f"{field} has an invalid host or port") from exc
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError(f"{field} must be an absolute URL")
    if port == 0 or (parts.netloc.endswith(":") and port is None):
        raise ValueError(f"{field} has an invalid host or port")
    if parts.username or parts.password:
        raise ValueError(f"{field} must not contain credentials")
    if allow_http_loopback and host in _LOOPBACK_HOSTS and parts.scheme in ("http", "https"):
        return value
    if parts.scheme != "https":
        raise ValueError(f"{field} must use https")
    refused = f"{field} must not point at a loopback, private, link-local or metadata address"
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    if ":" in host:  # an IPv6 literal (urlsplit took off the brackets)
        try:
            address = ipaddress.ip_address(host)
        except ValueError as exc:
            raise ValueError(f"{field} has an invalid host") from exc
    else:
        name = _dns_name(host, field)
        if name in _BLOCKED_HOSTS or name.endswith((".localhost", ".internal")):
            raise ValueError(refused)
        address = _ipv4_literal(name, field)
    if address is None:
        return value  # a DNS name: its addresses are checked again at delivery time
    if not is_public_address(address):
        raise ValueError(refused)
    return value


def _dns_name(host: str, field: str) -> str:
    """The host as resolvers see it: IDNA-normalised (look-alike characters fold), without the trailing dot."""
    try:
        name = host.encode("idna").decode("ascii").lower().removesuffix(".")
    except UnicodeError as exc:
        raise ValueError(f"{field} has an invalid host name") from exc
    if not _DNS_NAME.fullmatch(name):
        raise ValueError(f"{field} has an invalid host name")
    return name


def _ipv4_literal(name: str, field: str) -> ipaddress.IPv4Address | None:
    """The address a name spells in any form inet_aton accepts (``127.1``, ``0x7f000001``, ``017700000001``, ``0``).

    Raises:
        ValueError: the name is numeric but no address (a part is out of range).
    """
    parts = name.split(".")
    if len(parts) > 4 or not all(_NUMERIC_PART.fullmatch(part) for part in parts):
        return None
    values = [int(p[2:] or "0", 16) if p.startswith("0x") else int(p, 8 if p.startswith("0") else 10) for p in parts]
    *leading, last = values
    # Each leading part is one byte; the last part fills the bytes that remain.
    if any(v > 0xFF for v in leading) or last >= 1 << (8 * (5 - len(parts))):
        raise ValueError(f"{field} has a numeric host that is no IPv4 address")
    number = last
    for i, v in enumerate(leading):
        number |= v << (24 - 8 * i)
    return ipaddress.IPv4Address(number)

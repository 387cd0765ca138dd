"""Which IP addresses we ever connect to on a user's behalf: one policy for the functions and the worker.

Used by the webhook URL checks (:func:`shared.models.check_public_url`), the SSRF-pinned sender
(:mod:`shared.http_safe`) and the worker's image fetcher (:mod:`worker.images`). Standard library only: the
worker image copies this one file of ``shared/``.

An address is public when it is global unicast and, for IPv6, when every IPv4 address it embeds is public too.
An IPv6 address that carries an IPv4 one a gateway or the host's own stack may route to (169.254.169.254, the
metadata server, reached as ``[::ffff:0:a9fe:a9fe]``) is refused in every embedding:

- IPv4-mapped ``::ffff:0:0/96`` and IPv4-translated ``::ffff:0:0:0/96`` (SIIT), IPv4-compatible ``::/96``, and the
  well-known NAT64 prefix ``64:ff9b::/96``: the last 32 bits;
- 6to4 ``2002::/16``: bits 16..48;
- Teredo ``2001::/32``: the server (bits 32..64) and the client (the last 32 bits, inverted);
- the local-use NAT64 prefix ``64:ff9b:1::/48`` (RFC 8215) is never global, and where its IPv4 address sits
  depends on the operator's prefix length, so the whole range is refused.

``Address.is_global`` alone is not enough: Python's tables differ between versions and call several of these
ranges global (3.11 says ``::ffff:0:a9fe:a9fe`` and ``64:ff9b:1::a9fe:a9fe`` are), so the ranges are named here.
"""

from __future__ import annotations

import ipaddress

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_LOW32 = (
    ipaddress.IPv6Network("::ffff:0:0/96"),  # IPv4-mapped
    ipaddress.IPv6Network("::ffff:0:0:0/96"),  # IPv4-translated (SIIT)
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible (deprecated), also :: and ::1
    ipaddress.IPv6Network("64:ff9b::/96"),  # NAT64, well-known prefix
)
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")
_REFUSED_V6 = (
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # NAT64, local use: never global
)


def parse_address(text: str) -> Address:
    """An address as a resolver or a socket gives it (an IPv6 zone id ``%eth0`` is dropped).

    Raises:
        ValueError: not an IP address.
    """
    return ipaddress.ip_address(text.split("%", 1)[0])


def embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """Every IPv4 address ``address`` carries in one of the embeddings of the module docstring."""
    value = int(address)
    if any(address in net for net in _LOW32):
        return (ipaddress.IPv4Address(value & 0xFFFFFFFF),)
    if address in _SIX_TO_FOUR:
        return (ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF),)
    if address in _TEREDO:
        server = ipaddress.IPv4Address((value >> 64) & 0xFFFFFFFF)
        client = ipaddress.IPv4Address(~value & 0xFFFFFFFF)
        return (server, client)
    return ()


def is_public_address(address: Address, *, allow_loopback: bool = False) -> bool:
    """Global unicast, with every embedded IPv4 address global unicast too.

    ``allow_loopback`` (tests and the local stack only) also lets a plain loopback address (``127.0.0.0/8``,
    ``::1``) through; never one embedded in another IPv6 address, and never any other range.
    """
    if allow_loopback and address.is_loopback:
        return True
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in net for net in _REFUSED_V6):
            return False
        if not all(is_public_address(v4) for v4 in embedded_ipv4(address)):
            return False
    return bool(address.is_global) and not address.is_multicast


def is_public_text(text: str, *, allow_loopback: bool = False) -> bool:
    """:func:`is_public_address` of a textual address; anything that is no address is not public."""
    try:
        address = parse_address(text)
    except ValueError:
        return False
    return is_public_address(address, allow_loopback=allow_loopback)

"""One address policy for the webhook checks, the pinned sender and the worker's image fetcher (issue 18, point 8)."""

from __future__ import annotations

import ipaddress

import pytest

from shared import address_policy, http_safe
from shared.address_policy import embedded_ipv4, is_public_address, is_public_text
from shared.http_safe import RefusedTargetError, check_target
from shared.public_urls import check_public_url

# Every IPv6 embedding of a non-global IPv4 address (metadata, loopback, private), and the local-use NAT64 range.
REFUSED = [
    "::ffff:a9fe:a9fe",  # IPv4-mapped 169.254.169.254
    "::ffff:0:a9fe:a9fe",  # IPv4-translated (SIIT)
    "::ffff:0:127.0.0.1",
    "::a9fe:a9fe",  # IPv4-compatible
    "::127.0.0.1",
    "::10.0.0.1",
    "::",
    "64:ff9b::a9fe:a9fe",  # NAT64, well-known prefix
    "64:ff9b::10.0.0.1",
    "64:ff9b:1::a9fe:a9fe",  # NAT64, local use (RFC 8215)
    "64:ff9b:1:ffff::808:808",
    "2002:a9fe:a9fe::1",  # 6to4
    "2002:7f00:1::",
    "2001:0:a9fe:a9fe::1",  # Teredo, server 169.254.169.254
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo, client 192.0.2.45 (documentation range)
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1 (inverted)
]


@pytest.mark.parametrize("address", REFUSED)
def test_every_embedding_of_a_non_global_ipv4_address_is_refused(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))
    assert not is_public_text(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "2a00:1450:4001::1"])
def test_global_addresses_pass(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


def test_the_embedded_addresses() -> None:
    def embedded(text: str) -> list[str]:
        return [str(v4) for v4 in embedded_ipv4(ipaddress.IPv6Address(text))]

    assert embedded("::ffff:0:a9fe:a9fe") == ["169.254.169.254"]
    assert embedded("::ffff:a9fe:a9fe") == ["169.254.169.254"]
    assert embedded("::a9fe:a9fe") == ["169.254.169.254"]
    assert embedded("64:ff9b::a9fe:a9fe") == ["169.254.169.254"]
    assert embedded("2002:a9fe:a9fe::1") == ["169.254.169.254"]
    assert embedded("2001:0:4136:e378:8000:63bf:80ff:fffe") == ["65.54.227.120", "127.0.0.1"]
    assert embedded("2606:4700:4700::1111") == []


def test_loopback_only_plain_and_only_when_allowed() -> None:
    assert is_public_address(ipaddress.ip_address("127.0.0.1"), allow_loopback=True)
    assert is_public_address(ipaddress.ip_address("::1"), allow_loopback=True)
    assert not is_public_address(ipaddress.ip_address("::ffff:127.0.0.1"), allow_loopback=True)
    assert not is_public_address(ipaddress.ip_address("::127.0.0.1"), allow_loopback=True)
    assert not is_public_address(ipaddress.ip_address("10.0.0.1"), allow_loopback=True)
    assert not is_public_text("not an address")
    assert is_public_text("8.8.8.8%eth0")


@pytest.mark.parametrize("address", REFUSED)
def test_webhook_urls_with_an_embedded_private_address_are_refused(address: str) -> None:
    with pytest.raises(ValueError, match="must not point at"):
        check_public_url(f"https://[{address}]/", allow_http_loopback=False, field="user_webhook_url")


@pytest.mark.parametrize("address", REFUSED)
def test_the_pinned_sender_refuses_a_name_resolving_to_an_embedded_private_address(address: str) -> None:
    with pytest.raises(RefusedTargetError, match="resolves to"):
        check_target("https://hooks.example.com/x", allow_http_loopback=False, resolver=lambda h, p: [address])


def test_the_functions_and_the_worker_share_the_one_policy() -> None:
    images = pytest.importorskip("worker.images")
    assert images.is_public_address is address_policy.is_public_address
    assert http_safe.is_public_address is address_policy.is_public_address

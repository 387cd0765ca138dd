"""The SSRF checks at delivery time, with an injected resolver (no DNS)."""

from __future__ import annotations

import pytest

from shared.http_safe import RefusedTargetError, check_target


def resolving(*addresses: str):  # type: ignore[no-untyped-def]
    return lambda host, port: list(addresses)


@pytest.mark.parametrize(
    "addresses",
    [
        ("127.0.0.1",),
        ("169.254.169.254",),  # the metadata server
        ("10.1.2.3",),
        ("192.168.0.10",),
        ("172.16.0.1",),
        ("0.0.0.0",),
        ("224.0.0.1",),
        ("::1",),
        ("::ffff:127.0.0.1",),
        ("fe80::1",),
        ("fd00::1",),
        ("93.184.216.34", "127.0.0.1"),  # one bad address is enough
    ],
)
def test_a_name_that_resolves_to_a_private_address_is_refused(addresses: tuple[str, ...]) -> None:
    with pytest.raises(RefusedTargetError, match="resolves to"):
        check_target("https://hooks.example.com/x", allow_http_loopback=True, resolver=resolving(*addresses))


def test_a_public_name_connects_to_the_checked_address() -> None:
    target = check_target(
        "https://hooks.example.com:8443/in?a=1", allow_http_loopback=False, resolver=resolving("93.184.216.34")
    )
    assert (target.host, target.address, target.port, target.path) == (
        "hooks.example.com",
        "93.184.216.34",
        8443,
        "/in?a=1",
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",  # https only
        "https://metadata.google.internal/computeMetadata/v1/",
        "https://169.254.169.254/latest",
        "https://127.0.0.1/x",
        "https://0x7f000001/x",
        "https://user:pw@hooks.example.com/x",
        "http://127.0.0.1:8000/x",  # loopback only where the local stack allows it
    ],
)
def test_urls_refused_before_resolving(url: str) -> None:
    def never(host: str, port: int) -> list[str]:
        raise AssertionError("resolved a URL that should have been refused first")

    with pytest.raises(RefusedTargetError):
        check_target(url, allow_http_loopback=False, resolver=never)


def test_loopback_only_with_the_local_stack_switch_and_only_literally() -> None:
    target = check_target("http://127.0.0.1:8000/x", allow_http_loopback=True, resolver=resolving())
    assert target.address == "127.0.0.1"
    with pytest.raises(RefusedTargetError):  # a name that resolves to 127.0.0.1 is still refused
        check_target("http://rebind.example.com:8000/x", allow_http_loopback=True, resolver=resolving("127.0.0.1"))

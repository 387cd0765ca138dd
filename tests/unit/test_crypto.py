"""Tenant ids, sealing and signing: the properties that keep secrets secret."""

import base64
import os

import pytest

from shared import signing
from shared.crypto import Sealer, UnsealError, secret_hash, tenant_id
from shared.models import SealedCredentials

KEY = base64.b64encode(os.urandom(32)).decode()


def test_tenant_id_is_keyed_and_stable() -> None:
    assert tenant_id("pepper", "rp_key") == tenant_id("pepper", "rp_key")
    assert tenant_id("pepper", "rp_key") != tenant_id("other", "rp_key")
    assert "rp_key" not in tenant_id("pepper", "rp_key")


def test_seal_roundtrip_and_binding() -> None:
    sealer = Sealer(KEY)
    creds = SealedCredentials(runpod_api_key="rp_secret", hf_token="hf_secret")
    sealed = sealer.seal("dep1", creds)
    assert b"rp_secret" not in sealed and b"hf_secret" not in sealed
    assert sealer.open("dep1", sealed) == creds
    with pytest.raises(UnsealError):
        sealer.open("dep2", sealed)
    with pytest.raises(UnsealError):
        Sealer(base64.b64encode(os.urandom(32)).decode()).open("dep1", sealed)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(UnsealError):
        sealer.open("dep1", tampered)


def test_callback_secret_is_per_deployment_and_nonce() -> None:
    sealer = Sealer(KEY)
    a = sealer.callback_secret("dep1", "n1")
    assert a == sealer.callback_secret("dep1", "n1")
    assert a != sealer.callback_secret("dep2", "n1")
    assert a != sealer.callback_secret("dep1", "n2")
    assert a.startswith("whsec_")
    assert secret_hash(a) != a


def test_signature_roundtrip_and_refusals() -> None:
    secret = signing.new_secret()
    body = b'{"phase":"ready"}'
    headers = signing.sign_headers(secret, body, now=1_000_000)
    assert signing.verify(secret, headers, body, now=1_000_010) == headers["webhook-id"]
    with pytest.raises(signing.SignatureError, match="does not match"):
        signing.verify(secret, headers, b'{"phase":"failed"}', now=1_000_010)
    with pytest.raises(signing.SignatureError, match="does not match"):
        signing.verify(signing.new_secret(), headers, body, now=1_000_010)
    with pytest.raises(signing.SignatureError, match="outside the accepted window"):
        signing.verify(secret, headers, body, now=1_000_000 + 301)
    with pytest.raises(signing.SignatureError, match="missing"):
        signing.verify(secret, {}, body)


def test_rotated_secrets_accept_any_listed_signature() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    body = b"{}"
    headers = signing.sign_headers(new, body, msg_id="msg_1", now=5)
    headers["webhook-signature"] = signing.signature(old, "msg_1", 5, body) + " " + headers["webhook-signature"]
    assert signing.verify(new, headers, body, now=5) == "msg_1"

"""Server-side secrets: tenant ids, sealed credentials and per-deployment callback secrets.

- Tenant id = HMAC-SHA256(pepper, api key): stable per key, useless without the pepper (a bare hash of a Runpod
  key could be brute-forced against leaked keys).
- Sealed credentials = AES-256-GCM with a random nonce; the deployment id is the associated data, so a sealed blob
  copied onto another deployment does not open.
- Callback secret = HMAC(sealing key, "callback:" + deployment id + nonce): derived, never stored. Only the nonce and
  a hash are kept; erasing them revokes the secret (see docs/decisions/2026-11-callback-secrets.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.models import SealedCredentials
from shared.signing import SECRET_PREFIX

_NONCE_BYTES = 12


class UnsealError(Exception):
    """The sealed blob was tampered with, sealed for another deployment, or sealed with another key."""


def tenant_id(pepper: str, api_key: str) -> str:
    """The opaque owner id of everything created with ``api_key``."""
    return "t_" + hmac.new(pepper.encode(), api_key.encode(), hashlib.sha256).hexdigest()[:40]


class Sealer:
    """Seals and opens per-deployment credentials, and derives callback secrets."""

    def __init__(self, key_b64: str) -> None:
        key = base64.b64decode(key_b64)
        self._aead = AESGCM(key)
        self._callback_key = hmac.new(key, b"visgate-callback-secret-v1", hashlib.sha256).digest()
        self._job_ended_key = hmac.new(key, b"visgate-job-ended-token-v1", hashlib.sha256).digest()

    def seal(self, deployment_id: str, credentials: SealedCredentials) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        plaintext = credentials.model_dump_json(exclude_none=True).encode()
        return nonce + self._aead.encrypt(nonce, plaintext, deployment_id.encode())

    def open(self, deployment_id: str, sealed: bytes) -> SealedCredentials:
        try:
            plaintext = self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], deployment_id.encode())
        except InvalidTag as exc:
            raise UnsealError("sealed credentials do not open for this deployment") from exc
        return SealedCredentials.model_validate_json(plaintext)

    def seal_text(self, context: str, plaintext: str) -> bytes:
        """Seal a server-side secret (a tenant's webhook signing secret); ``context`` is the associated data."""
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext.encode(), context.encode())

    def open_text(self, context: str, sealed: bytes) -> str:
        """Inverse of :meth:`seal_text`; raises :class:`UnsealError` for another context or key."""
        try:
            return self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], context.encode()).decode()
        except InvalidTag as exc:
            raise UnsealError("sealed secret does not open in this context") from exc

    def callback_secret(self, deployment_id: str, nonce: str) -> str:
        """The ``whsec_`` secret the worker of ``deployment_id`` signs its phase reports with."""
        raw = hmac.new(self._callback_key, f"{deployment_id}:{nonce}".encode(), hashlib.sha256).digest()
        return SECRET_PREFIX + base64.b64encode(raw).decode()

    def job_ended_token(self, deployment_id: str) -> str:
        """The token in the URL Runpod calls when a job of ``deployment_id`` ends (Runpod's job webhooks carry no
        signature): it proves only that the call names a deployment we gave that URL for."""
        raw = hmac.new(self._job_ended_key, deployment_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def secret_hash(secret: str) -> str:
    """What is stored instead of a secret, to recognise it later."""
    return hashlib.sha256(secret.encode()).hexdigest()

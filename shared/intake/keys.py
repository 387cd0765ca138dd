"""Who may call: a Runpod key is checked with Runpod the first time a tenant is seen, before anything is written.

Without this, any string is a key: each new one a new tenant with a fresh rate-limit window, so one client could
create unlimited deployment documents (and a provisioning attempt each) by sending a new random key per request.

- The verdict (one cheap ``GET /v2/serverless`` with that key) is remembered in the server-only ``key_verdicts``
  collection, by tenant id (never the key), for ``KEY_VERDICT_TTL_S``; a refusal for ``KEY_REFUSAL_TTL_S``.
- Each instance also keeps good verdicts in memory, so the GET routes of a verified tenant stay one Firestore read.
- Refused keys are counted per client address (the last ``X-Forwarded-For`` entry: the address Google's front end
  saw and appended) and past ``REFUSED_KEYS_PER_ADDRESS_PER_MINUTE`` an address gets 429 before Runpod is asked:
  probing keys is bounded, callers whose keys are good are not slowed.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from flask import Request

from shared.config import Settings
from shared.errors import ApiError, RetryableError
from shared.intake.auth import Caller
from shared.intake.ratelimit import WINDOW_S, current_window
from shared.runpod.client import RunpodConnector
from shared.runpod.errors import RunpodAuthError
from shared.store import DeploymentStore, KeyVerdict, utcnow

_MEMORY_LIMIT = 10_000


def client_address(request: Request) -> str:
    """The caller's address as Google's front end passes it (it appends what it saw to ``X-Forwarded-For``)."""
    forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
    return forwarded[-1] if forwarded else (request.remote_addr or "unknown")


class KeyVerifier:
    def __init__(
        self,
        store: DeploymentStore,
        runpod: RunpodConnector,
        *,
        verdict_ttl_s: float,
        refusal_ttl_s: float,
        refusals_per_address_per_minute: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._runpod = runpod
        self._verdict_ttl_s = verdict_ttl_s
        self._refusal_ttl_s = refusal_ttl_s
        self._refusal_limit = refusals_per_address_per_minute
        self._clock = clock
        self._verified: dict[str, float] = {}  # tenant -> when this instance's memory of it expires
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, store: DeploymentStore, settings: Settings) -> KeyVerifier:
        runpod = RunpodConnector(
            settings.runpod_api_base_url, settings.runpod_endpoint_base_url, settings.runpod_timeout_s
        )
        return cls(
            store,
            runpod,
            verdict_ttl_s=settings.key_verdict_ttl_s,
            refusal_ttl_s=settings.key_refusal_ttl_s,
            refusals_per_address_per_minute=settings.refused_keys_per_address_per_minute,
        )

    def verify(self, caller: Caller, address: str) -> None:
        """Pass a caller whose key Runpod accepts; 401 for a refused key, 429 for an address that keeps sending them.

        Raises:
            ApiError: 401 ``invalid_api_key``, 429 ``too_many_refused_keys``, 503 when Runpod cannot say.
        """
        if self._remembered(caller.tenant):
            return
        verdict = self._store.key_verdict(caller.tenant)
        if verdict is None:
            verdict = self._ask_runpod(caller, address)
        if verdict.valid:
            self._remember(caller.tenant)
            return
        self._count_refusal(address)
        raise ApiError(
            401,
            "invalid_api_key",
            "Runpod does not accept this API key",
            headers={"WWW-Authenticate": 'Bearer realm="visgate", error="invalid_token"'},
        )

    def _ask_runpod(self, caller: Caller, address: str) -> KeyVerdict:
        # Before spending a Runpod call on an unknown key: is this address probing?
        if self._store.count_in_window(self._refusal_key(address)) >= self._refusal_limit:
            raise self._too_many()
        try:
            self._runpod.client(caller.api_key).list_endpoints()
            valid = True
        except RunpodAuthError:
            valid = False
        except RetryableError as exc:
            raise ApiError(
                503,
                "runpod_unavailable",
                "Runpod cannot verify the API key now; retry shortly",
                headers={"Retry-After": "5"},
            ) from exc
        ttl = self._verdict_ttl_s if valid else self._refusal_ttl_s
        verdict = KeyVerdict(valid=valid, expires_at=utcnow() + timedelta(seconds=ttl))
        self._store.record_key_verdict(caller.tenant, verdict)
        return verdict

    def _count_refusal(self, address: str) -> None:
        window = current_window(self._address_id(address), self._refusal_limit)
        if self._store.increment_window(f"refused:{window.key}", window.expires_at) > self._refusal_limit:
            raise self._too_many()

    def _refusal_key(self, address: str) -> str:
        return f"refused:{current_window(self._address_id(address), self._refusal_limit).key}"

    @staticmethod
    def _address_id(address: str) -> str:
        return hashlib.sha256(address.encode()).hexdigest()[:32]

    def _too_many(self) -> ApiError:
        return ApiError(
            429,
            "too_many_refused_keys",
            f"more than {self._refusal_limit} refused API keys from this address in a minute",
            headers={"Retry-After": str(WINDOW_S)},
        )

    def _remembered(self, tenant: str) -> bool:
        with self._lock:
            expires = self._verified.get(tenant)
            return expires is not None and expires > self._clock()

    def _remember(self, tenant: str) -> None:
        with self._lock:
            if len(self._verified) >= _MEMORY_LIMIT:
                self._verified.clear()  # bounded memory; verified tenants are read back from Firestore once
            self._verified[tenant] = self._clock() + min(self._verdict_ttl_s, 300.0)

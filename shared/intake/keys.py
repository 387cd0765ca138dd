"""Who may call: a Runpod key is checked with Runpod the first time a tenant is seen, before anything is written.

Without this, any string is a key: each new one a new tenant with a fresh rate-limit window, so one client could
create unlimited deployment documents (and a provisioning attempt each) by sending a new random key per request.

- The verdict (one cheap ``GET /v2/serverless`` with that key) is remembered in the server-only ``key_verdicts``
  collection, by tenant id (never the key), for ``KEY_VERDICT_TTL_S``; a refusal for ``KEY_REFUSAL_TTL_S``.
- Each instance also keeps good verdicts in memory, so the GET routes of a verified tenant stay one Firestore read.
- Refused keys are counted per client address (the last ``X-Forwarded-For`` entry: the address Google's front end
  saw and appended) and past ``REFUSED_KEYS_PER_ADDRESS_PER_MINUTE`` an address gets 429 before Runpod is asked:
  probing keys is bounded, callers whose keys are good are not slowed. A made-up invoke key (``vdk_...``) counts
  there too (:meth:`KeyVerifier.refused`), and an address this instance saw refused is screened before its next
  invoke key costs a read (:meth:`KeyVerifier.screen`).
- A sensitive step (creating a deployment, an invoke key or a client token, rotating the webhook secret) asks Runpod
  again when the verdict is older than ``KEY_REVERIFY_SENSITIVE_S``: a key its owner revoked at Runpod stops
  working for those within minutes, while reads keep the cheaper hour.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from flask import Request

from shared.errors import ApiError, RetryableError
from shared.intake.auth import Caller
from shared.intake.ratelimit import WINDOW_S, current_window
from shared.runpod.client import RunpodConnector
from shared.runpod.errors import RunpodAuthError
from shared.server_records import KeyVerdict
from shared.store import DeploymentStore, utcnow

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
        reverify_sensitive_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._runpod = runpod
        self._verdict_ttl_s = verdict_ttl_s
        self._refusal_ttl_s = refusal_ttl_s
        self._refusal_limit = refusals_per_address_per_minute
        self._reverify_s = reverify_sensitive_s
        self._clock = clock
        # tenant -> when this instance's memory of it expires, and when Runpod gave the verdict (None: unknown)
        self._verified: dict[str, tuple[float, datetime | None]] = {}
        self._refused_recently: dict[str, str] = {}  # address id -> the refusal window it was last refused in
        self._lock = threading.Lock()

    def verify(self, caller: Caller, address: str, *, sensitive: bool = False) -> None:
        """Pass a caller whose key Runpod accepts; 401 for a refused key, 429 for an address that keeps sending them.

        ``sensitive``: the verdict must be younger than ``KEY_REVERIFY_SENSITIVE_S``, else Runpod is asked again.

        Raises:
            ApiError: 401 ``invalid_api_key``, 429 ``too_many_refused_keys``, 503 when Runpod cannot say.
        """
        remembered, checked_at = self._remembered(caller.tenant)
        if remembered and not (sensitive and self._stale(checked_at)):
            return
        verdict = self._store.key_verdict(caller.tenant)
        if verdict is None or (sensitive and verdict.valid and self._stale(verdict.checked_at)):
            verdict = self._ask_runpod(caller, address)
        if verdict.valid:
            self._remember(caller.tenant, verdict.checked_at)
            return
        self._forget(caller.tenant)
        self._count_refusal(address)
        raise ApiError(
            401,
            "invalid_api_key",
            "Runpod does not accept this API key",
            headers={"WWW-Authenticate": 'Bearer realm="visgate", error="invalid_token"'},
        )

    def screen(self, address: str) -> None:
        """429 before anything is read for an address this instance saw refused in this window and that is over the
        limit (one read, and only for such an address: good callers pay nothing).

        Raises:
            ApiError: 429 ``too_many_refused_keys``.
        """
        key = self._refusal_key(address)
        with self._lock:
            seen = self._refused_recently.get(self._address_id(address)) == key
        if seen and self._store.count_in_window(key) >= self._refusal_limit:
            raise self._too_many()

    def refused(self, address: str) -> None:
        """Count a key refused without asking Runpod (a made-up invoke key) against its address.

        Raises:
            ApiError: 429 ``too_many_refused_keys`` once the address is over the limit.
        """
        self._count_refusal(address)

    def _stale(self, checked_at: datetime | None) -> bool:
        return checked_at is None or (utcnow() - checked_at).total_seconds() > self._reverify_s

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
        now = utcnow()
        verdict = KeyVerdict(valid=valid, expires_at=now + timedelta(seconds=ttl), checked_at=now)
        self._store.record_key_verdict(caller.tenant, verdict)
        return verdict

    def _count_refusal(self, address: str) -> None:
        key = self._refusal_key(address)
        with self._lock:
            if len(self._refused_recently) >= _MEMORY_LIMIT:
                self._refused_recently.clear()
            self._refused_recently[self._address_id(address)] = key
        window = current_window(self._address_id(address), self._refusal_limit)
        if self._store.increment_window(key, window.expires_at) > self._refusal_limit:
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

    def _remembered(self, tenant: str) -> tuple[bool, datetime | None]:
        """Whether this instance remembers the tenant's key as good, and when Runpod said so (None: unknown)."""
        with self._lock:
            entry = self._verified.get(tenant)
        if entry is None or entry[0] <= self._clock():
            return False, None
        return True, entry[1]

    def _forget(self, tenant: str) -> None:
        with self._lock:
            self._verified.pop(tenant, None)

    def _remember(self, tenant: str, checked_at: datetime | None) -> None:
        with self._lock:
            if len(self._verified) >= _MEMORY_LIMIT:
                self._verified.clear()  # bounded memory; verified tenants are read back from Firestore once
            self._verified[tenant] = (self._clock() + min(self._verdict_ttl_s, 300.0), checked_at)

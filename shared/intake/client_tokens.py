"""Firebase Authentication custom tokens for client apps that listen to their deployments in Firestore.

A browser or mobile app exchanges the user's Runpod key (``POST /v1/client-token``) for a custom token whose claim
``tenant`` is the caller's tenant id; it signs in to Firebase Authentication with it and listens to ``deployments``
where ``owner == tenant``. ``firestore.rules`` let it read only its own deployments and their event logs.

Signing: in production the token is signed through the IAM ``signBlob`` API as the functions' service account
(``CLIENT_TOKEN_SERVICE_ACCOUNT_EMAIL``, or the instance's own account, discovered from the metadata server); with
``FIREBASE_AUTH_EMULATOR_HOST`` set (the local stack) firebase-admin makes the unsigned tokens the Auth emulator takes.
"""

from __future__ import annotations

import threading
from typing import Any

import firebase_admin
from firebase_admin import auth

APP_NAME = "visgate-client-tokens"
TOKEN_LIFETIME_S = 3600  # Firebase custom tokens are valid for one hour


class ClientTokenIssuer:
    """Issues custom tokens; the firebase-admin app is built on first use (it needs no network until then)."""

    def __init__(self, project_id: str, service_account_email: str | None = None) -> None:
        self.project_id = project_id
        self._service_account = service_account_email
        self._app: firebase_admin.App | None = None
        self._lock = threading.Lock()

    def _firebase_app(self) -> firebase_admin.App:
        with self._lock:
            if self._app is None:
                options: dict[str, Any] = {"projectId": self.project_id}
                if self._service_account:
                    options["serviceAccountId"] = self._service_account
                try:
                    self._app = firebase_admin.get_app(APP_NAME)
                except ValueError:
                    self._app = firebase_admin.initialize_app(options=options, name=APP_NAME)
            return self._app

    def issue(self, tenant: str) -> str:
        """A custom token for ``tenant`` (uid = tenant id, claim ``tenant``)."""
        token = auth.create_custom_token(tenant, {"tenant": tenant}, app=self._firebase_app())
        return token.decode() if isinstance(token, bytes) else str(token)

"""The functions' settings: each reads only its own secrets; secrets arrive with stray whitespace, and validation
errors never quote them."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

from shared import topology
from shared.config import (
    SECRET_FIELDS,
    SETTINGS_BY_FUNCTION,
    BackgroundSettings,
    CallbackSettings,
    IntakeSettings,
    Settings,
    secret_fields,
    secret_id_of,
)

KEY = base64.b64encode(bytes(range(32))).decode()
REPO = Path(__file__).resolve().parents[2]


def test_secrets_lose_the_newline_that_gcloud_secrets_create_keeps() -> None:
    settings = IntakeSettings(tenant_pepper="pepper-value\n", sealing_key=f" {KEY}\n")
    assert settings.tenant_pepper.get_secret_value() == "pepper-value"
    assert settings.sealing_key.get_secret_value() == KEY


def test_a_bad_sealing_key_is_refused_without_printing_it() -> None:
    wrong = base64.b64encode(b"not-a-32-byte-sealing-key-value").decode()
    with pytest.raises(ValidationError) as caught:
        IntakeSettings(tenant_pepper="pepper-value", sealing_key=wrong)
    assert "SEALING_KEY must decode to 32 bytes" in str(caught.value)
    assert wrong not in str(caught.value)


def test_a_missing_secret_is_refused_without_printing_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TENANT_PEPPER", raising=False)  # the integration fixtures set it for the session
    with pytest.raises(ValidationError) as caught:
        IntakeSettings(sealing_key=KEY, model_cache_aws_secret_access_key="aws-secret-value")
    text = str(caught.value)
    assert "tenant_pepper" in text
    assert KEY not in text
    assert "aws-secret-value" not in text


def test_the_shared_cache_key_is_a_secret_manager_field_of_the_callback_only() -> None:
    assert "model_cache_aws_secret_access_key" in SECRET_FIELDS
    assert not CallbackSettings.model_fields["model_cache_aws_secret_access_key"].is_required()
    holders = [
        cls for cls in set(SETTINGS_BY_FUNCTION.values()) if "model_cache_aws_secret_access_key" in cls.model_fields
    ]
    assert holders == [CallbackSettings]


def test_each_function_s_settings_declare_exactly_its_topology_secrets() -> None:
    assert set(SETTINGS_BY_FUNCTION) == {fn.name for fn in topology.FUNCTIONS}
    for fn in topology.FUNCTIONS:
        fields = secret_fields(SETTINGS_BY_FUNCTION[fn.name])
        assert sorted(secret_id_of(field) for field in fields) == sorted(fn.secrets), fn.name
    assert secret_fields(Settings) == ()
    assert secret_fields(BackgroundSettings) == ("sealing_key",)


def test_each_function_builds_the_settings_class_its_entry_names() -> None:
    for name, cls in SETTINGS_BY_FUNCTION.items():
        source = (REPO / "functions" / topology.function(name).source / "main.py").read_text()
        assert re.findall(r"get_settings\((\w+)\)", source) == [cls.__name__], name


def test_a_function_not_needing_a_secret_ignores_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANT_PEPPER", "pepper-value")
    monkeypatch.setenv("MODEL_CACHE_AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    settings = BackgroundSettings(sealing_key=KEY)
    assert not hasattr(settings, "tenant_pepper")
    assert not hasattr(settings, "model_cache_aws_secret_access_key")


class _FakeSecretManager:
    """The one call SecretManagerSource makes of ``secretmanager.SecretManagerServiceClient``."""

    asked: ClassVar[list[str]] = []

    def access_secret_version(self, name: str) -> Any:
        self.asked.append(name)
        secret = name.split("/secrets/", 1)[1].split("/", 1)[0]
        value = {"sealing-key": KEY}.get(secret, f"{secret}-value")
        payload = type("Payload", (), {"data": value.encode()})
        return type("Version", (), {"payload": payload})


@pytest.mark.parametrize("function", sorted(SETTINGS_BY_FUNCTION))
def test_secret_manager_is_asked_only_for_the_function_s_own_secrets(
    function: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.cloud import secretmanager

    for name in SECRET_FIELDS:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("SECRET_MANAGER_PROJECT", "p1")
    monkeypatch.setattr(secretmanager, "SecretManagerServiceClient", _FakeSecretManager)
    _FakeSecretManager.asked = []
    settings = SETTINGS_BY_FUNCTION[function]()
    expected = sorted(topology.function(function).secrets)
    assert sorted(path.split("/")[3] for path in _FakeSecretManager.asked) == expected
    assert all(path == f"projects/p1/secrets/{path.split('/')[3]}/versions/latest" for path in _FakeSecretManager.asked)
    assert settings.sealing_key.get_secret_value() == KEY

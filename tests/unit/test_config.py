"""The functions' settings: secrets arrive with stray whitespace, and validation errors never quote them."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from shared.config import SECRET_FIELDS, Settings

KEY = base64.b64encode(bytes(range(32))).decode()


def test_secrets_lose_the_newline_that_gcloud_secrets_create_keeps() -> None:
    settings = Settings(tenant_pepper="pepper-value\n", sealing_key=f" {KEY}\n")
    assert settings.tenant_pepper.get_secret_value() == "pepper-value"
    assert settings.sealing_key.get_secret_value() == KEY


def test_a_bad_sealing_key_is_refused_without_printing_it() -> None:
    wrong = base64.b64encode(b"not-a-32-byte-sealing-key-value").decode()
    with pytest.raises(ValidationError) as caught:
        Settings(tenant_pepper="pepper-value", sealing_key=wrong)
    assert "SEALING_KEY must decode to 32 bytes" in str(caught.value)
    assert wrong not in str(caught.value)


def test_a_missing_secret_is_refused_without_printing_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TENANT_PEPPER", raising=False)  # the integration fixtures set it for the session
    with pytest.raises(ValidationError) as caught:
        Settings(sealing_key=KEY, model_cache_aws_secret_access_key="aws-secret-value")
    text = str(caught.value)
    assert "tenant_pepper" in text
    assert KEY not in text
    assert "aws-secret-value" not in text


def test_the_shared_cache_key_is_a_secret_manager_field() -> None:
    assert "model_cache_aws_secret_access_key" in SECRET_FIELDS
    assert not Settings.model_fields["model_cache_aws_secret_access_key"].is_required()

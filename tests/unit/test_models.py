"""Request validation: refused inputs get field-level reasons, accepted inputs keep their values exactly."""

import json
from typing import Any

import pytest
from pydantic import ValidationError

from shared.models import CreateDeploymentRequest
from shared.public_urls import check_public_url


def parse(body: dict[str, Any], allow_loopback: bool = False) -> CreateDeploymentRequest:
    return CreateDeploymentRequest.model_validate_json(
        json.dumps(body), context={"allow_http_loopback": allow_loopback}
    )


def test_defaults() -> None:
    req = parse({"hf_model_id": "stabilityai/sd-turbo"})
    assert (req.revision, req.cache_scope.value, req.workers_min, req.workers_max, req.idle_timeout_seconds) == (
        "main",
        "off",
        0,
        1,
        120,
    )


@pytest.mark.parametrize(
    "model_id", ["sd-turbo", "org/name", "a/b.c_d-e", "x" * 96 + "/" + "y" * 96, "_org/_name_", "a_/b", "_"]
)
def test_accepted_model_ids(model_id: str) -> None:
    assert parse({"hf_model_id": model_id}).hf_model_id == model_id


@pytest.mark.parametrize(
    "model_id",
    [
        "",
        "a/b/c",
        "-a/b",
        ".a/b",
        "a/b-",
        "a/b.",
        "a/../b",
        "a/b..c",
        "a--b/c",
        "x" * 97,
        "a b/c",
        "a/b?x",
        "/a",
        "a/b\n",
    ],
)
def test_refused_model_ids(model_id: str) -> None:
    with pytest.raises(ValidationError) as exc:
        parse({"hf_model_id": model_id})
    assert exc.value.errors()[0]["loc"] == ("hf_model_id",)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("workers_max", 0),
        ("workers_max", 11),
        ("workers_min", -1),
        ("idle_timeout_seconds", 4),
        ("idle_timeout_seconds", 3601),
        ("ttl_minutes", 9),
        ("ttl_minutes", 10081),
        ("workers_max", "3"),
        ("workers_max", 1.5),
        ("gpu_tier", "huge"),
        ("cache_scope", "public"),
        ("revision", "../main"),
        ("revision", "main\n"),
        ("unknown_field", 1),
    ],
)
def test_refused_fields(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as exc:
        parse({"hf_model_id": "a/b", field: value})
    assert exc.value.errors()[0]["loc"] == (field,)


def test_workers_min_not_above_max() -> None:
    with pytest.raises(ValidationError, match="workers_min must not exceed workers_max"):
        parse({"hf_model_id": "a/b", "workers_min": 3, "workers_max": 2})


def test_private_cache_needs_bucket_and_keys() -> None:
    with pytest.raises(ValidationError, match="requires user_s3_url, user_aws_access_key_id"):
        parse({"hf_model_id": "a/b", "cache_scope": "private"})
    ok = parse(
        {
            "hf_model_id": "a/b",
            "cache_scope": "private",
            "user_s3_url": "s3://my-bucket/models",
            "user_aws_access_key_id": "AKIA",
            "user_aws_secret_access_key": "s3cr3tvalue",
            "user_aws_region": "eu-west-1",
        }
    )
    assert ok.user_aws_secret_access_key is not None
    assert "s3cr3tvalue" not in repr(ok)


def test_bucket_fields_refused_without_private_scope() -> None:
    with pytest.raises(ValidationError, match="only apply to cache_scope 'private'"):
        parse({"hf_model_id": "a/b", "user_s3_url": "s3://bucket"})


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.1/hook",
        "https://172.16.0.1/hook",
        "https://169.254.169.254/computeMetadata",
        "https://metadata.google.internal/x",
        "https://[::1]/hook",
        "https://[fd00::1]/hook",
        "https://user:pw@example.com/hook",
        "https://0.0.0.0/hook",
        "not a url",
        # Legacy numeric IPv4 forms (inet_aton: 1-4 parts, decimal, hex or octal) and trailing dots.
        "https://127.1/",
        "https://2130706433/",
        "https://0x7f000001/",
        "https://0177.0.0.1/",
        "https://10.1/",
        "https://0/",
        "https://0x/",
        "https://127.0.0.1./",
        "https://256.1.1.1/",
        "https://4294967296/",
        "https://localhost./",
        "https://metadata.google.internal./",
        "https://\N{FULLWIDTH LATIN SMALL LETTER L}ocalhost/",  # IDNA folds it to localhost
        "https://\N{FULLWIDTH DIGIT ONE}27.0.0.1/",
        "https://%6cocalhost/",
        "https://a..b/",
        # IPv6, and IPv6 that carries a private IPv4 address.
        "https://[::ffff:127.0.0.1]/",
        "https://[::7f00:1]/",
        "https://[64:ff9b::a00:1]/",
        "https://[2002:a00:1::]/",
        "https://[fe80::1]/",
        "https://[ff0e::1]/",
        "https://224.0.0.1/",
        # Ports a sender could never use (issue 18): out of range, not a number, zero, empty.
        "https://hooks.example.com:99999/",
        "https://hooks.example.com:abc/",
        "https://hooks.example.com:0/",
        "https://hooks.example.com:/",
        "https://[2606:4700:4700::1111]:70000/",
        "https://[::1/",
    ],
)
def test_refused_webhook_urls(url: str) -> None:
    with pytest.raises(ValidationError):
        parse({"hf_model_id": "a/b", "user_webhook_url": url})


def test_loopback_http_only_when_allowed() -> None:
    assert parse({"hf_model_id": "a/b", "user_webhook_url": "http://127.0.0.1:9/x"}, allow_loopback=True)
    with pytest.raises(ValidationError):
        parse({"hf_model_id": "a/b", "user_webhook_url": "http://10.0.0.1:9/x"}, allow_loopback=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/x",
        "https://hooks.example.com./x",
        "https://8.8.8.8/x",
        "https://134744072/x",  # 8.8.8.8 as one number
        "https://[2606:4700:4700::1111]/x",
        "https://bücher.example/x",
    ],
)
def test_public_https_url_accepted(url: str) -> None:
    assert check_public_url(url, allow_http_loopback=False, field="u") == url


@pytest.mark.parametrize("field", ["hf_token", "user_aws_access_key_id", "user_aws_secret_access_key"])
def test_empty_secrets_are_refused(field: str) -> None:
    body = {
        "hf_model_id": "a/b",
        "cache_scope": "private",
        "user_s3_url": "s3://bucket/p",
        "user_aws_access_key_id": "AKIA",
        "user_aws_secret_access_key": "secret",
        field: "",
    }
    with pytest.raises(ValidationError) as exc:
        parse(body)
    (error,) = exc.value.errors()
    assert error["loc"] == (field,)
    assert "must not be empty" in error["msg"]


def test_secret_length_is_counted_in_characters() -> None:
    assert parse({"hf_model_id": "a/b", "hf_token": "t" * 512}).hf_token is not None
    with pytest.raises(ValidationError) as exc:
        parse({"hf_model_id": "a/b", "hf_token": "t" * 513})
    assert "at most 512 characters" in exc.value.errors()[0]["msg"]
    assert "items" not in exc.value.errors()[0]["msg"]

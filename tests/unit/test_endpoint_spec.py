"""What a deployment's Runpod endpoint is made of: the worker's environment per cache scope, and a create body that
Runpod's OpenAPI document accepts."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared.config import Settings
from shared.deployments.endpoint_spec import callback_url, endpoint_spec, is_resource_of, resource_name, worker_env
from shared.document import Deployment
from shared.models import CacheScope, SealedCredentials
from simulators.runpod import openapi_contract
from tests.unit.factories import COMMIT, deployment, settings

CALLBACK_SECRET = "whsec_callback-secret"
PLATFORM_KEY_ID = "platform-cache-key-id"
PLATFORM_SECRET = "platform-cache-secret"
FUNCTIONS = "https://functions.example.com/"


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "functions_base_url": FUNCTIONS,
        "model_cache_s3_url": "s3://platform-cache/models",
        "model_cache_aws_access_key_id": PLATFORM_KEY_ID,
        "model_cache_aws_secret_access_key": PLATFORM_SECRET,
        "hf_endpoint": "https://hub.example.com",
    }
    return settings(**(values | overrides))


def _credentials(**fields: str) -> SealedCredentials:
    return SealedCredentials.model_validate({"runpod_api_key": "rpa_user_key"} | fields)


def _private() -> tuple[Deployment, SealedCredentials]:
    doc = deployment(
        cache_scope=CacheScope.PRIVATE,
        user_s3_url="s3://user-bucket/cache",
        user_aws_endpoint_url="https://s3.user.example.com",
        user_aws_region="eu-west-1",
    )
    return doc, _credentials(user_aws_access_key_id="USERKEYID", user_aws_secret_access_key="user-secret")


# --- worker_env ---------------------------------------------------------------------------------------------------


def test_the_worker_learns_what_to_load_and_where_to_report() -> None:
    doc = deployment()

    env = worker_env(_settings(), doc, _credentials(), CALLBACK_SECRET)

    assert env["VISGATE_DEPLOYMENT_ID"] == doc.deployment_id
    assert (
        env["VISGATE_CALLBACK_URL"]
        == f"https://functions.example.com/callback/v1/deployments/{doc.deployment_id}/phase"
    )
    assert env["VISGATE_CALLBACK_SECRET"] == CALLBACK_SECRET
    assert (env["HF_MODEL_ID"], env["HF_MODEL_REVISION"]) == ("org/model", COMMIT)  # the pinned commit, not "main"
    assert env["HF_ENDPOINT"] == "https://hub.example.com"
    assert env["MODEL_CACHE_SCOPE"] == "off"
    assert all(isinstance(value, str) and value for value in env.values())


def test_a_private_cache_carries_the_users_own_keys_and_never_the_platforms() -> None:
    doc, credentials = _private()

    env = worker_env(_settings(), doc, credentials, CALLBACK_SECRET)

    cache = {key: value for key, value in env.items() if key.startswith("MODEL_CACHE_")}
    assert cache == {
        "MODEL_CACHE_SCOPE": "private",
        "MODEL_CACHE_S3_URL": "s3://user-bucket/cache",
        "MODEL_CACHE_AWS_ACCESS_KEY_ID": "USERKEYID",
        "MODEL_CACHE_AWS_SECRET_ACCESS_KEY": "user-secret",
        "MODEL_CACHE_AWS_ENDPOINT_URL": "https://s3.user.example.com",
        "MODEL_CACHE_AWS_REGION": "eu-west-1",
    }
    assert "VISGATE_CACHE_GRANT_URL" not in env
    assert not {PLATFORM_KEY_ID, PLATFORM_SECRET, "s3://platform-cache/models"} & set(env.values())


def test_a_private_cache_without_endpoint_or_region_leaves_them_out() -> None:
    doc = deployment(cache_scope=CacheScope.PRIVATE, user_s3_url="s3://user-bucket")
    credentials = _credentials(user_aws_access_key_id="USERKEYID", user_aws_secret_access_key="user-secret")

    env = worker_env(_settings(), doc, credentials, CALLBACK_SECRET)

    assert "MODEL_CACHE_AWS_ENDPOINT_URL" not in env
    assert "MODEL_CACHE_AWS_REGION" not in env
    assert env["MODEL_CACHE_S3_URL"] == "s3://user-bucket"


def test_a_granted_shared_cache_gives_only_the_grant_url() -> None:
    doc = deployment(cache_scope=CacheScope.SHARED, shared_cache_granted=True)

    env = worker_env(_settings(), doc, _credentials(), CALLBACK_SECRET)

    assert env["MODEL_CACHE_SCOPE"] == "shared"
    grant = f"https://functions.example.com/callback/v1/deployments/{doc.deployment_id}/cache-grant"
    assert env["VISGATE_CACHE_GRANT_URL"] == grant
    assert not [key for key in env if key.startswith("MODEL_CACHE_") and key != "MODEL_CACHE_SCOPE"]
    assert not {PLATFORM_KEY_ID, PLATFORM_SECRET, "s3://platform-cache/models"} & set(env.values())


@pytest.mark.parametrize(
    ("scope", "granted"), [(CacheScope.SHARED, False), (CacheScope.SHARED, None), (CacheScope.OFF, None)]
)
def test_without_a_grant_the_worker_goes_to_the_hub(scope: CacheScope, granted: bool | None) -> None:
    doc = deployment(cache_scope=scope, shared_cache_granted=granted)

    env = worker_env(_settings(), doc, _credentials(), CALLBACK_SECRET)

    assert env["MODEL_CACHE_SCOPE"] == "off"
    assert "VISGATE_CACHE_GRANT_URL" not in env
    assert not [key for key in env if key.startswith("MODEL_CACHE_") and key != "MODEL_CACHE_SCOPE"]


def test_the_dtype_is_sent_only_when_set() -> None:
    doc = deployment()

    assert "WORKER_DTYPE" not in worker_env(_settings(), doc, _credentials(), CALLBACK_SECRET)
    assert worker_env(_settings(worker_dtype="bfloat16"), doc, _credentials(), CALLBACK_SECRET)["WORKER_DTYPE"] == (
        "bfloat16"
    )


def test_the_hub_token_is_sent_only_when_given() -> None:
    doc = deployment(has_hf_token=True)

    assert "HF_TOKEN" not in worker_env(_settings(), doc, _credentials(), CALLBACK_SECRET)
    assert worker_env(_settings(), doc, _credentials(hf_token="hf_user"), CALLBACK_SECRET)["HF_TOKEN"] == "hf_user"


@pytest.mark.parametrize(
    ("output_s3_url", "prefix"),
    [
        ("s3://my-outputs/images", "images"),
        ("s3://my-outputs/a/b/", "a/b"),
        ("s3://my-outputs//a/b//", "a/b"),
        ("s3://my-outputs/", None),
        ("s3://my-outputs", None),
    ],
)
def test_an_output_bucket_sends_its_prefix_and_the_url_expiry(output_s3_url: str, prefix: str | None) -> None:
    doc = deployment(output_s3_url=output_s3_url)

    env = worker_env(_settings(output_url_expiry_s=3600), doc, _credentials(), CALLBACK_SECRET)

    assert env["OUTPUT_URL_EXPIRY_S"] == "3600"
    assert env.get("OUTPUT_S3_PREFIX") == prefix  # s3Config names only the bucket; unset: keys start at the job id


def test_without_an_output_bucket_no_output_env_is_sent() -> None:
    env = worker_env(_settings(), deployment(), _credentials(), CALLBACK_SECRET)

    assert not [key for key in env if key.startswith("OUTPUT_")]


def test_the_url_expiry_defaults_to_and_is_bounded_by_sigv4s_seven_days() -> None:
    assert _settings().output_url_expiry_s == 7 * 24 * 3600
    for refused in (0, 7 * 24 * 3600 + 1):
        with pytest.raises(ValidationError):
            _settings(output_url_expiry_s=refused)


def test_the_callback_url_ignores_a_trailing_slash_on_the_base() -> None:
    with_slash = callback_url(_settings(functions_base_url="https://f.example.com/"), "dep-1", "cache-grant")
    without = callback_url(_settings(functions_base_url="https://f.example.com"), "dep-1", "cache-grant")

    assert with_slash == without == "https://f.example.com/callback/v1/deployments/dep-1/cache-grant"


# --- endpoint_spec ------------------------------------------------------------------------------------------------


def _made(**overrides: Any) -> tuple[dict[str, Any], Deployment, dict[str, str]]:
    """The create body for a deployment under these settings, the deployment and the worker env it carries."""
    config = _settings(**overrides)
    doc = deployment(workers_min=0, workers_max=3, idle_timeout_seconds=300)
    env = worker_env(config, doc, _credentials(), CALLBACK_SECRET)
    return endpoint_spec(config, doc, env, ["AMPERE_24", "ADA_24"]).body(), doc, env


def _body(**overrides: Any) -> dict[str, Any]:
    return _made(**overrides)[0]


def test_the_create_body_is_a_queue_endpoint_with_the_container_inline() -> None:
    body, doc, env = _made(worker_container_disk_gb=30, worker_execution_timeout_s=900)

    assert body == {
        "name": f"visgate-{doc.deployment_id}",
        "type": "QUEUE",
        "image": "ghcr.io/visgate/diffusers-worker@sha256:" + "0" * 64,
        "env": env,
        "disk": 30,
        "gpu": {"pools": ["AMPERE_24", "ADA_24"], "count": 1},
        "workers": {"min": 0, "max": 3, "idleTimeout": 300},
        "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4},
        "flashboot": "FLASHBOOT",
        "timeout": 900_000,
    }


@pytest.mark.parametrize(("enabled", "sent"), [(True, "FLASHBOOT"), (False, "OFF")])
def test_the_flashboot_setting_is_honoured(enabled: bool, sent: str) -> None:
    assert _body(endpoint_flashboot=enabled)["flashboot"] == sent


def test_request_count_scaling_leaves_out_the_idle_timeout() -> None:
    body = _body(endpoint_scaler_type="REQUEST_COUNT", endpoint_scaler_value=2)

    assert body["scaling"] == {"type": "REQUEST_COUNT", "requestCount": 2}
    assert body["workers"] == {"min": 0, "max": 3}


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"endpoint_flashboot": False},
        {"endpoint_scaler_type": "REQUEST_COUNT", "endpoint_scaler_value": 1},
        {"worker_dtype": "float16"},
    ],
)
def test_the_create_body_is_runpods_create_endpoint_request(overrides: dict[str, Any]) -> None:
    reason = openapi_contract.missing_reason()
    if reason:
        pytest.skip(reason)
    assert openapi_contract.request_errors("POST", "/v2/serverless", _body(**overrides)) == []


# --- resource names -----------------------------------------------------------------------------------------------


def test_the_endpoint_name_is_the_deployments_own() -> None:
    assert resource_name("dep-1") == "visgate-dep-1"
    assert is_resource_of("visgate-dep-1", "dep-1")
    assert is_resource_of("visgate-dep-1-fb", "dep-1")  # Runpod marks FlashBoot endpoints so


@pytest.mark.parametrize("name", ["visgate-dep-10", "visgate-dep-1-fbx", "visgate-dep", "dep-1", "visgate-dep-1-fb-fb"])
def test_another_deployments_endpoint_is_not_ours(name: str) -> None:
    assert not is_resource_of(name, "dep-1")

"""Every pattern that validates input matches the whole string (issue 18, point 6): Python's ``$`` also matches
before a trailing newline, so ``re.match(r"^...$")`` and pydantic's Python engine accepted ``"value\\n"``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from shared.config import Settings
from shared.deployments.sweep import orphaned
from shared.hub_rules import weight_variant
from shared.model_tasks import LoraSpec
from shared.models import CreateDeploymentRequest
from shared.patterns import WholeMatch


def test_whole_match_refuses_a_trailing_newline_and_documents_the_pattern() -> None:
    from typing import Annotated

    class Model(BaseModel):
        value: Annotated[str, WholeMatch(r"^(?!.*\.\.)[a-z]+$")]

    assert Model(value="abc").value == "abc"
    for bad in ("abc\n", "a..b", "abc\ndef"):
        with pytest.raises(ValidationError, match="string_pattern_mismatch"):
            Model(value=bad)
    assert Model.model_json_schema()["properties"]["value"]["pattern"] == r"^(?!.*\.\.)[a-z]+$"


def test_the_lora_patterns_are_published_in_the_json_schema() -> None:
    properties = LoraSpec.model_json_schema()["properties"]
    assert properties["hf_model_id"]["pattern"].startswith("^")
    assert properties["revision"]["pattern"].startswith("^")


@pytest.mark.parametrize(
    "body",
    [
        {"cache_scope": "private", "user_s3_url": "s3://bucket\n"},
        {"output_s3_url": "s3://bucket\n"},
        {"user_aws_region": "eu-west-1\n"},
    ],
)
def test_create_request_refuses_a_trailing_newline(body: dict[str, Any]) -> None:
    keys = {"user_aws_access_key_id": "AKIA", "user_aws_secret_access_key": "secret"}
    full = {"hf_model_id": "a/b", **keys, "cache_scope": "private", "user_s3_url": "s3://bucket", **body}
    with pytest.raises(ValidationError, match=next(iter(body.keys() - {"cache_scope"}))):
        CreateDeploymentRequest.model_validate_json(json.dumps(full), context={"allow_http_loopback": False})


def test_weight_names_and_endpoint_names_match_whole() -> None:
    assert weight_variant("diffusion_pytorch_model.fp16.safetensors") == (True, "fp16")
    assert weight_variant("diffusion_pytorch_model.safetensors\n") == (False, None)
    endpoint = "visgate-" + "a" * 32
    assert orphaned(endpoint, lambda _: False) == "a" * 32
    assert orphaned(endpoint + "\n", lambda _: False) is None


def test_the_worker_image_must_be_pinned_whole() -> None:
    pinned = "europe-docker.pkg.dev/p/r/worker@sha256:" + "0" * 64
    assert Settings(worker_image=pinned).worker_image == pinned
    with pytest.raises(ValidationError, match="pinned by digest"):
        Settings(worker_image=pinned + "\n")


def test_pydantic_rust_engine_patterns_end_at_the_end_of_the_string() -> None:
    """The remaining ``Field(pattern=...)`` fields use pydantic's default (Rust) engine, where ``$`` is the end of
    the string: checked here rather than assumed (the Python engine, above, is the one that needed WholeMatch)."""
    from shared.cache_layout import ManifestFile

    good = {"path": "unet/diffusion_pytorch_model.safetensors", "size": 1, "sha256": "0" * 64}
    assert ManifestFile.model_validate(good).sha256 == "0" * 64
    with pytest.raises(ValidationError, match="sha256"):
        ManifestFile.model_validate(good | {"sha256": "0" * 64 + "\n"})

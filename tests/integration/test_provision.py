"""provision (Pub/Sub ``deployment-requested``) end to end: the model check, the GPU choice, the endpoint and its
warm-up, failures before any Runpod call, redeliveries and races, tasks and LoRA adapters.

The harness (the functions host, the simulators, ``Env``) is tests/support/provisioning.py.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.lifecycle import Status
from shared.runpod.client import RunpodConnector, WorkerStatus
from shared.store import utcnow
from shared.topology import TOPIC_DEPLOYMENT_REQUESTED
from tests.support.provisioning import (
    ALL_POOLS,
    BF16,
    BROKEN,
    ENCODER,
    FIRST_WINDOW,
    GATED,
    HF_ACCEPTED,
    HF_OTHER,
    LORA,
    LORA_GATED,
    LORA_PICKLE,
    LORA_TWO,
    PIPE,
    PIXART,
    Env,
    _nothing_left,
    _provisioned_unwatched,
    _raw_push,
    _request,
    _seal_with_another_key,
    _settings,
)
from tests.support.serving import Served


def test_happy_path_reaches_ready_with_timings(provisioning: Env) -> None:
    key = provisioning.account()
    deployment_id = provisioning.create(key)

    assert provisioning.provision(deployment_id).status_code == 200
    doc = provisioning.wait_status(deployment_id, Status.READY)

    assert len(doc.model_commit_sha) == 40
    assert doc.vram_estimate_gb > 0
    assert doc.gpu.window == FIRST_WINDOW
    assert doc.runpod.endpoint_url.endswith(f"/v2/{doc.runpod.endpoint_id}")
    assert set(doc.timings.model_dump()) >= {"download_s", "load_s", "warmup_s", "loaded_from_cache"}
    assert doc.timings.download_s is not None
    state = provisioning.runpod_state(key)
    assert [endpoint["name"] for endpoint in state["endpoints"]] == [f"visgate-{deployment_id}"]
    endpoint = state["endpoints"][0]
    assert endpoint["id"] == doc.runpod.endpoint_id
    assert endpoint["gpu"]["pools"] == FIRST_WINDOW
    assert endpoint["flashboot"] == "FLASHBOOT"  # our setting's default; v2's own default is OFF
    worker_env = endpoint["env"]
    assert worker_env["HF_MODEL_REVISION"] == doc.model_commit_sha
    assert worker_env["VISGATE_CALLBACK_URL"].endswith(f"/callback/v1/deployments/{deployment_id}/phase")
    assert "WORKER_DTYPE" not in worker_env  # unset: the worker loads the model's own dtype
    assert [j["input"] for j in state["jobs"]] == [{"warmup": True}]
    # What Runpod's own API says: the endpoint is listed, and its worker (the one that proved the model) is up.
    client = RunpodConnector(provisioning.runpod, provisioning.runpod, 10).client(key)
    assert [endpoint.id for endpoint in client.list_endpoints()] == [doc.runpod.endpoint_id]
    workers = client.endpoint_workers(doc.runpod.endpoint_id or "")
    assert workers.summary.total == 1
    assert workers.workers[0].status in (WorkerStatus.IDLE, WorkerStatus.RUNNING)
    # No secret lands on the document.
    assert key not in doc.model_dump_json()
    assert provisioning.callback_secret(deployment_id) not in doc.model_dump_json()


def test_three_deliveries_make_one_endpoint(provisioning: Env) -> None:
    key = provisioning.account()
    deployment_id = provisioning.create(key)

    threads = [threading.Thread(target=provisioning.provision, args=(deployment_id,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    provisioning.provision(deployment_id)

    provisioning.wait_status(deployment_id, Status.READY)
    state = provisioning.runpod_state(key)
    assert len(state["endpoints"]) == 1
    assert provisioning.doc(deployment_id).runpod.endpoint_id == state["endpoints"][0]["id"]


def test_an_endpoint_created_before_a_crash_is_adopted(provisioning: Env) -> None:
    from shared.deployments.endpoint_spec import endpoint_spec
    from shared.runpod.client import RunpodConnector

    key = provisioning.account()
    deployment_id = provisioning.create(key)
    provisioning.scenario(start_delay_s=30)  # the orphan endpoint must not serve a worker of its own meanwhile
    ranked = list(ALL_POOLS)
    provisioning.move(
        deployment_id,
        Status.SELECTING_GPU,
        model_commit_sha="a" * 40,
        vram_estimate_gb=2.5,
        pipeline_class="StableDiffusionPipeline",
    )
    provisioning.move(deployment_id, Status.CREATING_ENDPOINT, gpu={"ranked": ranked, "window": ranked[:3]})
    # What a crashed attempt left behind: the endpoint on Runpod, its id not on the document.
    client = RunpodConnector(provisioning.runpod, provisioning.runpod, 10).client(key)
    orphan = client.create_endpoint(endpoint_spec(_settings(), provisioning.doc(deployment_id), {}, ranked[:3]))

    assert provisioning.provision(deployment_id).status_code == 200

    assert provisioning.doc(deployment_id).runpod.endpoint_id == orphan.id
    assert len(provisioning.runpod_state(key)["endpoints"]) == 1


def test_a_model_no_gpu_can_hold_fails_with_its_own_reason_before_any_endpoint(provisioning: Env) -> None:
    key = provisioning.account()
    deployment_id = provisioning.create(key)
    provisioning.move(deployment_id, Status.SELECTING_GPU, vram_estimate_gb=500.0)

    provisioning.provision(deployment_id)
    doc = provisioning.wait_status(deployment_id, Status.FAILED)

    assert doc.error.code == "no_gpu_fits"
    assert "500.0 GB of VRAM" in doc.error.message
    assert provisioning.runpod_state(key)["endpoints"] == []


def test_the_estimate_uses_the_dtype_the_worker_will_load(models_root: Path) -> None:
    from shared.deployments.hub import HubInspector
    from shared.errors import PermanentError
    from simulators.hub.app import create_app as create_hub

    hub = Served(create_hub(models_root))
    try:
        preferred = HubInspector(hub.url, 10, None).inspect(BF16, "main", None)
        forced = HubInspector(hub.url, 10, "float32").inspect(BF16, "main", None)
        plain = HubInspector(hub.url, 10, None).inspect(PIPE, "main", None)
        with pytest.raises(PermanentError) as broken:
            HubInspector(hub.url, 10, None).inspect(BROKEN, "main", None)
    finally:
        hub.stop()

    assert preferred.dtype == "bfloat16"  # a component config asks for it; no WORKER_DTYPE set
    assert forced.dtype == "float32"
    assert forced.vram_estimate_gb > preferred.vram_estimate_gb  # full-precision activations
    assert plain.dtype == "float16"
    assert broken.value.reason == "unsupported_model"


def test_bad_runpod_key_fails_auth(provisioning: Env) -> None:
    deployment_id = provisioning.create("rpa_not_a_registered_key")

    assert provisioning.provision(deployment_id).status_code == 200

    doc = provisioning.wait_status(deployment_id, Status.FAILED)
    assert doc.error.code == "auth_failed"
    assert "rpa_not_a_registered_key" not in doc.model_dump_json()


def test_missing_model_fails_before_any_runpod_call(provisioning: Env) -> None:
    key = provisioning.account()
    deployment_id = provisioning.create(key, model="visgate-test/does-not-exist")

    provisioning.provision(deployment_id)
    provisioning.provision(deployment_id)  # a redelivery after the failure does not reach Runpod either

    doc = provisioning.wait_status(deployment_id, Status.FAILED)
    assert doc.error.code == "model_not_found"
    assert doc.runpod.endpoint_id is None
    assert provisioning.runpod_state(key)["requests"] == 0


def test_an_invalid_hub_token_has_its_own_reason(provisioning: Env) -> None:
    key = provisioning.account()
    deployment_id = provisioning.create(key, model=PIPE, hf_token="hf_expired_or_made_up")  # PIPE is public

    provisioning.provision(deployment_id)

    doc = provisioning.wait_status(deployment_id, Status.FAILED)
    assert doc.error.code == "hf_token_invalid"
    assert "invalid or expired" in doc.error.message
    assert provisioning.runpod_state(key)["requests"] == 0


def test_gated_model_without_an_accepted_token_fails(provisioning: Env) -> None:
    key = provisioning.account()
    without = provisioning.create(key, model=GATED)
    unaccepted = provisioning.create(key, model=GATED, hf_token=HF_OTHER)

    provisioning.provision(without)
    provisioning.provision(unaccepted)

    assert provisioning.wait_status(without, Status.FAILED).error.code == "model_gated"
    assert provisioning.wait_status(unaccepted, Status.FAILED).error.code == "model_gated"
    assert provisioning.runpod_state(key)["requests"] == 0


def test_gated_model_with_an_accepted_token_gets_ready(provisioning: Env) -> None:
    key = provisioning.account()
    deployment_id = provisioning.create(key, model=GATED, hf_token=HF_ACCEPTED)

    provisioning.provision(deployment_id)

    provisioning.wait_status(deployment_id, Status.READY)
    assert provisioning.runpod_state(key)["endpoints"][0]["env"]["HF_TOKEN"] == HF_ACCEPTED


def test_not_a_pipeline_is_unsupported(provisioning: Env) -> None:
    key = provisioning.account()
    deployment_id = provisioning.create(key, model=ENCODER)

    provisioning.provision(deployment_id)

    assert provisioning.wait_status(deployment_id, Status.FAILED).error.code == "unsupported_model"
    assert provisioning.runpod_state(key)["requests"] == 0


def test_delete_while_provision_is_creating_removes_what_it_created(provisioning: Env) -> None:
    """The race: cleanup runs to the end between provision's endpoint create and its record."""
    from shared.deployments.cleanup import cleanup
    from shared.deployments.provision import provision
    from shared.messages import DeploymentDeleteRequested, DeploymentRequested
    from shared.runpod.client import Endpoint, EndpointSpec, RunpodClient
    from shared.wiring import step_deps

    key = provisioning.account()
    deployment_id = provisioning.create(key)
    deps = step_deps(_settings())
    provisioning.move(deployment_id, Status.SELECTING_GPU, vram_estimate_gb=2.5, model_commit_sha="b" * 40)
    provisioning.move(deployment_id, Status.CREATING_ENDPOINT, gpu={"window": FIRST_WINDOW})
    real_save = RunpodClient.create_endpoint

    def save_then_delete(self: RunpodClient, spec: EndpointSpec) -> Endpoint:
        created = real_save(self, spec)
        provisioning.move(deployment_id, Status.DELETING)
        cleanup(DeploymentDeleteRequested(deployment_id=deployment_id, requested_at=utcnow()), deps)
        return created

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunpodClient, "create_endpoint", save_then_delete)
        outcome = provision(DeploymentRequested(deployment_id=deployment_id, requested_at=utcnow()), deps)

    assert "removed what was created" in outcome
    assert provisioning.doc(deployment_id).status == Status.DELETED.value
    assert _nothing_left(provisioning, key)()


def _json_logs(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(line) for line in caplog.text.splitlines() if line.startswith("{")]


def test_malformed_delivery_is_acknowledged_and_changes_nothing(
    provisioning: Env, caplog: pytest.LogCaptureFixture
) -> None:
    from shared.logging import JsonFormatter

    caplog.handler.setFormatter(JsonFormatter())
    deployment_id = provisioning.create(provisioning.account())
    message_id = uuid.uuid4().hex
    resp = _raw_push(
        provisioning,
        "provision",
        TOPIC_DEPLOYMENT_REQUESTED,
        b'{"not": "a request"}',
        datetime.now(UTC),
        message_id=message_id,
    )
    assert resp.status_code == 200  # a retry could not fix it: acknowledged, not redelivered forever
    assert provisioning.doc(deployment_id).status == Status.VALIDATING.value
    dropped = [line for line in _json_logs(caplog) if line["message"].startswith("dropped a malformed delivery")]
    assert [line["execution_id"] for line in dropped] == [message_id]


def test_an_unexpected_error_is_logged_with_the_deployment_and_retried(
    provisioning: Env, db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from shared.logging import JsonFormatter
    from shared.store import DEPLOYMENTS

    caplog.handler.setFormatter(JsonFormatter())
    deployment_id = provisioning.create(provisioning.account())
    db.collection(DEPLOYMENTS).document(deployment_id).update({"status": "no-such-status"})  # a bug, say
    assert provisioning.provision(deployment_id).status_code == 500  # retried: the bug may be fixed by a redeploy
    unhandled = [
        line for line in _json_logs(caplog) if line["message"].startswith("unhandled ValidationError in provision")
    ]
    assert len(unhandled) == 1
    assert unhandled[0]["deployment_id"] == deployment_id
    assert unhandled[0]["step"] == "provision"
    assert "no-such-status" not in unhandled[0]["message"]  # the type and stack only, never the text


def test_no_exception_text_reaches_a_log_line_flasks_own_included(
    provisioning: Env, db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception whose text quotes stored input (here a status no code knows) is logged by its type, step and
    ids: neither our lines nor Flask's own "Exception on /..." line (with its traceback) carry the text (issue 18)."""
    from shared.logging import JsonFormatter
    from shared.store import DEPLOYMENTS

    caplog.handler.setFormatter(JsonFormatter())
    canary = "canary-status\nwith-a-newline"
    deployment_id = provisioning.create(provisioning.account())
    db.collection(DEPLOYMENTS).document(deployment_id).update({"status": canary})
    assert provisioning.provision(deployment_id).status_code == 500
    logged = _json_logs(caplog)
    flask_line = [line for line in logged if line["message"].startswith("Exception on /")]
    assert flask_line, [line["message"] for line in logged]
    assert "(message redacted)" in flask_line[-1]["exception"]
    assert 'File "' in flask_line[-1]["exception"]  # the frames and the types stay
    ours = [line for line in logged if line["message"].startswith("unhandled ValidationError in provision")]
    assert ours and ours[-1]["deployment_id"] == deployment_id
    assert "canary" not in caplog.text


def test_a_retried_failure_is_logged_by_its_type_not_its_text(
    provisioning: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """A RetryableError's text may quote a model id or Runpod's answer: "will be retried" names its type only."""
    from shared.logging import JsonFormatter

    caplog.handler.setFormatter(JsonFormatter())
    deployment_id = provisioning.create(provisioning.account())
    provisioning.scenario(api_errors=1000)
    try:
        assert provisioning.provision(deployment_id).status_code == 500
    finally:
        provisioning.scenario(api_errors=0)
    retried = [line for line in _json_logs(caplog) if line["message"].startswith("will be retried")]
    assert retried and all(re.fullmatch(r"will be retried: <\w+>", line["message"]) for line in retried), retried
    assert retried[-1]["deployment_id"] == deployment_id and retried[-1]["step"] == "provision"


def test_stale_delivery_is_dropped(provisioning: Env) -> None:
    deployment_id = provisioning.create(provisioning.account())
    payload = json.dumps({"deployment_id": deployment_id, "requested_at": utcnow().isoformat()}).encode()
    old = datetime.fromtimestamp(time.time() - 2 * 86400, UTC)
    assert _raw_push(provisioning, "provision", TOPIC_DEPLOYMENT_REQUESTED, payload, old).status_code == 200
    assert provisioning.doc(deployment_id).status == Status.VALIDATING.value


def test_runpod_outage_is_retried_then_provisioning_resumes(provisioning: Env) -> None:
    key = provisioning.account()
    deployment_id = provisioning.create(key)
    provisioning.scenario(api_errors=1000)
    try:
        assert provisioning.provision(deployment_id).status_code == 500  # retryable: Pub/Sub delivers again
        assert provisioning.doc(deployment_id).status != Status.FAILED.value
    finally:
        provisioning.scenario(api_errors=0)
    assert provisioning.provision(deployment_id).status_code == 200
    assert provisioning.wait_status(deployment_id, Status.READY).error is None
    assert len(provisioning.runpod_state(key)["endpoints"]) == 1


def test_of_two_concurrent_creates_the_attempt_that_loses_removes_its_endpoint(provisioning: Env) -> None:
    from shared.deployments.provision import provision
    from shared.runpod.client import Endpoint, EndpointSpec, RunpodClient
    from shared.wiring import step_deps

    key = provisioning.account()
    provisioning.scenario(start_delay_s=30)
    deployment_id = provisioning.create(key)
    deps = step_deps(_settings())
    real_create = RunpodClient.create_endpoint
    raced: list[bool] = []

    def another_delivery_first(self: RunpodClient, spec: EndpointSpec) -> Endpoint:
        if not raced:
            raced.append(True)
            provision(_request(deployment_id), deps)  # a concurrent delivery creates and records its endpoint
        return real_create(self, spec)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunpodClient, "create_endpoint", another_delivery_first)
        provision(_request(deployment_id), deps)

    assert raced
    endpoints = provisioning.runpod_state(key)["endpoints"]
    assert [endpoint["id"] for endpoint in endpoints] == [provisioning.doc(deployment_id).runpod.endpoint_id]


def test_a_late_provision_delivery_still_finishes_a_failed_teardown(provisioning: Env) -> None:
    key = provisioning.account()
    provisioning.scenario(start_delay_s=30)
    deployment_id = _provisioned_unwatched(provisioning, key)
    # It failed while Runpod was unreachable: marked failed, nothing torn down yet.
    provisioning.move(deployment_id, Status.FAILED, error={"code": "timeout", "message": "x"})
    payload = json.dumps({"deployment_id": deployment_id, "requested_at": utcnow().isoformat()}).encode()
    two_days_ago = datetime.fromtimestamp(time.time() - 2 * 86400, UTC)

    assert _raw_push(provisioning, "provision", TOPIC_DEPLOYMENT_REQUESTED, payload, two_days_ago).status_code == 200

    assert _nothing_left(provisioning, key)()
    assert provisioning.doc(deployment_id).runpod.torn_down_at is not None


def test_the_watchdog_is_scheduled_before_the_warm_up_and_again_by_a_later_delivery(provisioning: Env) -> None:
    from shared.deployments.provision import provision
    from shared.errors import RetryableError
    from shared.tasks import TaskScheduler
    from shared.wiring import step_deps

    key = provisioning.account()
    provisioning.scenario(start_delay_s=30)
    deployment_id = provisioning.create(key)
    deps = step_deps(_settings())
    real_schedule = TaskScheduler.schedule
    names: list[str] = []

    def unavailable(*args: Any, **kwargs: Any) -> bool:
        raise RetryableError("Cloud Tasks is unavailable")

    def recorded(self: TaskScheduler, *args: Any, **kwargs: Any) -> bool:
        if deployment_id in kwargs["name"]:  # the in-process functions schedule for other tests' deployments too
            names.append(kwargs["name"])
        return real_schedule(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TaskScheduler, "schedule", unavailable)
        with pytest.raises(RetryableError):
            provision(_request(deployment_id), deps)
        # No watchdog, no warm-up: nothing starts a worker that nobody would watch.
        assert provisioning.runpod_state(key)["jobs"] == []
        # A worker reports before the redelivery (workersMin > 0 starts one as soon as the endpoint exists).
        provisioning.move(deployment_id, Status.DOWNLOADING_MODEL)
        patch.setattr(TaskScheduler, "schedule", recorded)
        outcome = provision(_request(deployment_id), deps)

    assert "provisioned already" in outcome
    assert names == [f"readiness-{deployment_id}-0"]


def test_provisioning_with_credentials_that_do_not_open_fails_for_good(provisioning: Env) -> None:
    key = provisioning.account()
    deployment_id = provisioning.create(key)
    _seal_with_another_key(provisioning, deployment_id, key)

    assert provisioning.provision(deployment_id).status_code == 200  # acknowledged: no retry opens them

    doc = provisioning.wait_status(deployment_id, Status.FAILED)
    assert doc.error.code == "internal"
    assert "sealed credentials do not open" in doc.error.message
    assert provisioning.runpod_state(key)["requests"] == 0


def test_a_task_the_model_has_reaches_the_worker_env(provisioning: Env) -> None:
    key = provisioning.account()
    deployment_id = provisioning.create(key, task="inpainting")

    provisioning.provision(deployment_id)

    doc = provisioning.wait_status(deployment_id, Status.READY)
    assert doc.task == "inpainting"
    template_env = provisioning.runpod_state(key)["endpoints"][0]["env"]
    assert template_env["WORKER_TASK"] == "inpainting"
    assert "WORKER_LORAS" not in template_env


@pytest.mark.parametrize("task", ["image_to_image", "inpainting"])
def test_a_task_the_model_cannot_do_fails_before_any_runpod_call(provisioning: Env, task: str) -> None:
    key = provisioning.account()
    deployment_id = provisioning.create(key, model=PIXART, task=task)

    provisioning.provision(deployment_id)

    error = provisioning.wait_status(deployment_id, Status.FAILED).error.model_dump()
    assert error["code"] == "unsupported_model"
    assert error["message"] == (f"{PIXART} is a PixArtSigmaPipeline, which cannot do {task}; it can do: text_to_image")
    assert provisioning.runpod_state(key)["requests"] == 0


def test_loras_are_pinned_to_a_commit_and_passed_to_the_worker(provisioning: Env) -> None:
    key = provisioning.account()
    loras = [
        {"hf_model_id": LORA, "scale": 0.5},
        {"hf_model_id": LORA_GATED, "weight_name": "pytorch_lora_weights.safetensors"},
        {"hf_model_id": LORA_TWO, "weight_name": "b.safetensors", "scale": -1.0},
    ]
    deployment_id = provisioning.create(key, hf_token=HF_ACCEPTED, task="image_to_image", loras=loras)

    provisioning.provision(deployment_id)

    doc = provisioning.wait_status(deployment_id, Status.READY)
    template_env = provisioning.runpod_state(key)["endpoints"][0]["env"]
    sent = json.loads(template_env["WORKER_LORAS"])
    assert [(item["hf_model_id"], item["weight_name"], item["scale"]) for item in sent] == [
        (LORA, "pytorch_lora_weights.safetensors", 0.5),
        (LORA_GATED, "pytorch_lora_weights.safetensors", 1.0),
        (LORA_TWO, "b.safetensors", -1.0),
    ]
    assert all(len(item["revision"]) == 40 for item in sent)
    assert [lora.model_dump() for lora in doc.resolved_loras] == sent
    assert [lora.hf_model_id for lora in doc.loras] == [LORA, LORA_GATED, LORA_TWO]


@pytest.mark.parametrize(
    ("lora", "token", "code", "message"),
    [
        ({"hf_model_id": "visgate-test/no-such-lora"}, None, "model_not_found", "LoRA visgate-test/no-such-lora@main"),
        ({"hf_model_id": LORA, "revision": "v9"}, None, "model_not_found", f"LoRA {LORA}@v9"),
        ({"hf_model_id": LORA_GATED}, None, "model_gated", f"LoRA {LORA_GATED}@main is gated"),
        ({"hf_model_id": LORA_GATED}, HF_OTHER, "model_gated", LORA_GATED),
        ({"hf_model_id": LORA_PICKLE}, None, "unsupported_model", "no safetensors weights (pickled weights are"),
        ({"hf_model_id": LORA_TWO}, None, "unsupported_model", "several safetensors files"),
        ({"hf_model_id": LORA, "weight_name": "x.safetensors"}, None, "unsupported_model", "has no x.safetensors"),
    ],
)
def test_a_bad_lora_fails_before_any_runpod_call(
    provisioning: Env, lora: dict[str, Any], token: str | None, code: str, message: str
) -> None:
    key = provisioning.account()
    deployment_id = provisioning.create(key, hf_token=token, loras=[lora])

    provisioning.provision(deployment_id)

    error = provisioning.wait_status(deployment_id, Status.FAILED).error.model_dump()
    assert error["code"] == code
    assert message in error["message"]
    assert provisioning.runpod_state(key)["requests"] == 0


def test_loras_on_a_pipeline_without_a_lora_loader_are_unsupported(provisioning: Env) -> None:
    key = provisioning.account()
    deployment_id = provisioning.create(key, model=PIXART, loras=[{"hf_model_id": LORA}])

    provisioning.provision(deployment_id)

    error = provisioning.wait_status(deployment_id, Status.FAILED).error.model_dump()
    assert error["code"] == "unsupported_model"
    assert "takes no LoRA adapters" in error["message"]

"""Provisioning end to end against the emulators and both simulators: provision, callback, readiness, cleanup.

The functions run in a functions host served on a local port (the Runpod simulator's instant workers call the
callback URL, the Cloud Tasks emulator calls the readiness URL). Deliveries to provision and cleanup are posted
as Pub/Sub pushes straight to that host, not published: a reused `make up` stack subscribes to the same topics.
Each test uses its own Runpod account (a fresh API key), so "nothing left" is checked per account.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2

from local.emulators import free_port
from shared.crypto import Sealer, secret_hash, tenant_id
from shared.document import Deployment
from shared.intake.steps import _initial_document
from shared.lifecycle import Status
from shared.models import CreateDeploymentRequest, SealedCredentials
from shared.signing import sign_headers
from shared.store import DeploymentStore, NewDeployment, utcnow
from shared.topology import QUEUE_READINESS, TOPIC_DEPLOYMENT_DELETE_REQUESTED, TOPIC_DEPLOYMENT_REQUESTED, function
from tests.support.serving import Served

REPO = Path(__file__).resolve().parents[2]
PIPE, GATED, ENCODER = "visgate-test/pipe", "visgate-test/pipe-gated", "visgate-test/encoder-only"
BF16, BROKEN = "visgate-test/pipe-bf16", "visgate-test/pipe-broken-config"
PIXART, LORA = "visgate-test/pixart", "visgate-test/lora"
LORA_GATED, LORA_PICKLE, LORA_TWO = "visgate-test/lora-gated", "visgate-test/lora-pickle", "visgate-test/lora-two"
HF_ACCEPTED, HF_OTHER = "hf_accepted_test", "hf_other_test"
FIRST_WINDOW = ["AMPERE_16", "AMPERE_24", "ADA_24"]
SECOND_WINDOW = ["AMPERE_48", "ADA_48_PRO", "AMPERE_80"]
ALL_POOLS = [*FIRST_WINDOW, *SECOND_WINDOW, "ADA_80_PRO", "HOPPER_141"]
FAST_WATCHDOG = {
    "READINESS_FIRST_CHECK_S": "0.2",
    "READINESS_BACKOFF_FACTOR": "1",
    "READINESS_MAX_INTERVAL_S": "0.3",
    "THROTTLED_SWITCH_AFTER_S": "0.4",
    "READINESS_DEADLINE_S": "60",
}


# --- a Hub folder shaped like diffusers pipelines (no torch needed: the simulator never loads weights) ------------


def _safetensors(dtype: str, shape: list[int]) -> bytes:
    size = {"F32": 4, "F16": 2, "BF16": 2}[dtype] * shape[0] * shape[1]
    header = json.dumps({"w": {"dtype": dtype, "shape": shape, "data_offsets": [0, size]}}).encode()
    return len(header).to_bytes(8, "little") + header + bytes(size)


def _write(root: Path, files: dict[str, bytes | str]) -> None:
    for path, content in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)


def _pipeline_files() -> dict[str, bytes | str]:
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.31.0",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "safety_checker": [None, None],
    }
    return {
        "model_index.json": json.dumps(index),
        "unet/config.json": "{}",
        "unet/diffusion_pytorch_model.safetensors": _safetensors("F32", [64, 64]),
        "unet/diffusion_pytorch_model.fp16.safetensors": _safetensors("F16", [64, 64]),
        "vae/config.json": "{}",
        "vae/diffusion_pytorch_model.safetensors": _safetensors("F32", [32, 32]),
        "text_encoder/config.json": "{}",
        "text_encoder/model.safetensors": _safetensors("F32", [16, 16]),
        "tokenizer/vocab.json": "{}",
        "scheduler/scheduler_config.json": "{}",
    }


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hub-models")
    (root / ".hubsim-tokens.json").write_text(json.dumps({HF_ACCEPTED: "alice", HF_OTHER: "oscar"}))
    _write(root / PIPE, _pipeline_files())
    _write(root / GATED, _pipeline_files())
    (root / GATED / ".hubsim.json").write_text(
        json.dumps({"gated": "auto", "private": False, "authorized_tokens": [HF_ACCEPTED]})
    )
    bf16 = _pipeline_files()
    bf16["unet/config.json"] = json.dumps({"torch_dtype": "bfloat16"})
    bf16["unet/diffusion_pytorch_model.bf16.safetensors"] = _safetensors("BF16", [64, 64])
    bf16["vae/diffusion_pytorch_model.bf16.safetensors"] = _safetensors("BF16", [32, 32])
    _write(root / BF16, bf16)
    _write(root / BROKEN, {**_pipeline_files(), "unet/config.json": "{not json"})
    _write(root / ENCODER, {"config.json": "{}", "model.safetensors": _safetensors("F32", [8, 8])})
    # A text-to-image-only family, and LoRA repos (a public one, a gated one, a pickle, two weight files).
    pixart_index = {
        "_class_name": "PixArtSigmaPipeline",
        "transformer": ["diffusers", "PixArtTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "T5Tokenizer"],
        "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
    }
    pixart = {k: v for k, v in _pipeline_files().items() if not k.startswith("unet/")}
    pixart["model_index.json"] = json.dumps(pixart_index)
    pixart["transformer/config.json"] = "{}"
    pixart["transformer/diffusion_pytorch_model.safetensors"] = _safetensors("F32", [64, 64])
    _write(root / PIXART, pixart)
    lora = _safetensors("F32", [4, 4])
    _write(root / LORA, {"pytorch_lora_weights.safetensors": lora, "README.md": "a LoRA"})
    _write(root / LORA_GATED, {"pytorch_lora_weights.safetensors": lora})
    (root / LORA_GATED / ".hubsim.json").write_text(
        json.dumps({"gated": "auto", "private": False, "authorized_tokens": [HF_ACCEPTED]})
    )
    _write(root / LORA_PICKLE, {"pytorch_lora_weights.bin": b"pickle"})
    _write(root / LORA_TWO, {"a.safetensors": lora, "b.safetensors": lora})
    return root


# --- servers --------------------------------------------------------------------------------------------------


class Env:
    """Everything a test needs: the store, the simulators, and delivery helpers."""

    def __init__(self, store: DeploymentStore, sealer: Sealer, pepper: str, runpod: str, functions: str) -> None:
        self.store = store
        self.sealer = sealer
        self.pepper = pepper
        self.runpod = runpod
        self.functions = functions

    # deployments

    def account(self) -> str:
        key = f"rpa_{secrets.token_hex(12)}"
        requests.post(f"{self.runpod}/_sim/accounts", json={"api_key": key}, timeout=5).raise_for_status()
        return key

    def create(self, key: str, model: str = PIPE, hf_token: str | None = None, **body: Any) -> str:
        deployment_id = uuid.uuid4().hex
        request = CreateDeploymentRequest.model_validate({"hf_model_id": model, **body})
        nonce = secrets.token_urlsafe(16)
        self.store.create(
            NewDeployment(
                document=_initial_document(deployment_id, tenant_id(self.pepper, key), request, utcnow()),
                sealed_credentials=self.sealer.seal(
                    deployment_id, SealedCredentials(runpod_api_key=key, hf_token=hf_token)
                ),
                callback_nonce=nonce,
                callback_secret_hash=secret_hash(self.sealer.callback_secret(deployment_id, nonce)),
            )
        )
        return deployment_id

    def doc(self, deployment_id: str) -> Deployment:
        doc = self.store.get(deployment_id)
        assert doc is not None
        return doc

    def wait_status(self, deployment_id: str, *wanted: Status, timeout_s: float = 20.0) -> Deployment:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            doc = self.doc(deployment_id)
            if doc.status in wanted:
                return doc
            time.sleep(0.05)
        raise AssertionError(f"{deployment_id} is {self.doc(deployment_id).status}, not {wanted}")

    def move(self, deployment_id: str, status: Status, **changes: Any) -> None:
        """Put a deployment in ``status`` directly (with fields set by name), as a step before it would have."""

        def change(doc: Deployment) -> bool:
            doc.phase_timestamps = {**doc.phase_timestamps, status: utcnow()}
            doc.status = status
            for name, value in changes.items():
                setattr(doc, name, value)
            return True

        self.store.update(deployment_id, change, message=f"test: {status.value}")

    def set(self, deployment_id: str, **changes: Any) -> None:
        """Set fields of the document by name (sub-models as dicts)."""

        def change(doc: Deployment) -> bool:
            for name, value in changes.items():
                setattr(doc, name, value)
            return True

        self.store.update(deployment_id, change)

    # deliveries

    def push(self, fn: str, topic: str, payload: dict[str, Any]) -> requests.Response:
        message = {
            "data": base64.b64encode(json.dumps(payload).encode()).decode(),
            "messageId": uuid.uuid4().hex,
            "publishTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "attributes": {"deployment_id": payload["deployment_id"]},
        }
        body = {"message": message, "subscription": f"projects/test/subscriptions/{fn}-push"}
        return requests.post(f"{self.functions}/{fn}/_pubsub/{topic}", json=body, timeout=30)

    def provision(self, deployment_id: str) -> requests.Response:
        payload = {"deployment_id": deployment_id, "requested_at": utcnow().isoformat()}
        return self.push("provision", TOPIC_DEPLOYMENT_REQUESTED, payload)

    def delete(self, deployment_id: str) -> requests.Response:
        payload = {"deployment_id": deployment_id, "requested_at": utcnow().isoformat(), "reason": "user"}
        return self.push("cleanup", TOPIC_DEPLOYMENT_DELETE_REQUESTED, payload)

    # the simulator

    def runpod_state(self, key: str) -> dict[str, Any]:
        state = requests.get(f"{self.runpod}/_sim/state", timeout=5).json()
        return next(a for a in state["accounts"] if a["api_key"] == key)

    def scenario(self, **changes: Any) -> None:
        requests.post(f"{self.runpod}/_sim/scenario", json=changes, timeout=5).raise_for_status()

    def report(self, deployment_id: str, body: dict[str, Any], secret: str, **sign: Any) -> requests.Response:
        raw = json.dumps({"schema_version": 1, **body}).encode()
        headers = {"Content-Type": "application/json", **sign_headers(secret, raw, **sign)}
        url = f"{self.functions}/callback/v1/deployments/{deployment_id}/phase"
        return requests.post(url, data=raw, headers=headers, timeout=10)

    def callback_secret(self, deployment_id: str) -> str:
        nonce = (self.store.secrets(deployment_id) or {})["callback_nonce"]
        return self.sealer.callback_secret(deployment_id, nonce)


@pytest.fixture(scope="module")
def env(intake_env: None, tasks_emulator: str, models_root: Path, db: Any, runpod_simulator: str) -> Iterator[Env]:
    from local.functions_host import create_host_app
    from shared.config import IntakeSettings, get_settings
    from simulators.hub.app import create_app as create_hub

    hub = Served(create_hub(models_root))
    functions_port = free_port()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {
            "HF_ENDPOINT": hub.url,
            "FUNCTIONS_BASE_URL": f"http://127.0.0.1:{functions_port}",
            **FAST_WATCHDOG,
        }.items():
            patch.setenv(key, value)
        get_settings.cache_clear()
        settings = get_settings(IntakeSettings)  # the pepper and the sealing key, as the intake reads them
        _ensure_queue(settings.google_cloud_project, settings.region, tasks_emulator)
        wanted = [function(name) for name in ("provision", "callback", "readiness", "cleanup")]
        host = Served(create_host_app(wanted, REPO / "functions", settings.google_cloud_project), functions_port)
        pepper = settings.tenant_pepper.get_secret_value()
        sealer = Sealer(settings.sealing_key.get_secret_value())
        yield Env(DeploymentStore(db), sealer, pepper, runpod_simulator, host.url)
        host.stop()
        hub.stop()
    get_settings.cache_clear()


def _ensure_queue(project: str, region: str, tasks_host: str) -> None:
    from shared.tasks import build_tasks_client

    client = build_tasks_client(tasks_host)
    parent = f"projects/{project}/locations/{region}"
    try:
        client.create_queue(parent=parent, queue=tasks_v2.Queue(name=f"{parent}/queues/{QUEUE_READINESS}"))
    except gexc.AlreadyExists:
        pass


@pytest.fixture
def e(env: Env) -> Iterator[Env]:
    """The environment, with the simulator's scenario back to plain afterwards."""
    yield env
    env.scenario(capacity={}, start_delay_s=0, crash_on_start=False, worker_report="ready")


def _nothing_left(e: Env, key: str) -> Callable[[], bool]:
    def check() -> bool:
        state = e.runpod_state(key)
        return not state["endpoints"]

    return check


def _eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


# --- the tests --------------------------------------------------------------------------------------------------


def test_happy_path_reaches_ready_with_timings(e: Env) -> None:
    key = e.account()
    deployment_id = e.create(key)

    assert e.provision(deployment_id).status_code == 200
    doc = e.wait_status(deployment_id, Status.READY)

    assert len(doc.model_commit_sha) == 40
    assert doc.vram_estimate_gb > 0
    assert doc.gpu.window == FIRST_WINDOW
    assert doc.runpod.endpoint_url.endswith(f"/v2/{doc.runpod.endpoint_id}")
    assert set(doc.timings.model_dump()) >= {"download_s", "load_s", "warmup_s", "loaded_from_cache"}
    assert doc.timings.download_s is not None
    state = e.runpod_state(key)
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
    # No secret lands on the document.
    assert key not in doc.model_dump_json()
    assert e.callback_secret(deployment_id) not in doc.model_dump_json()


def test_three_deliveries_make_one_endpoint(e: Env) -> None:
    key = e.account()
    deployment_id = e.create(key)

    threads = [threading.Thread(target=e.provision, args=(deployment_id,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    e.provision(deployment_id)

    e.wait_status(deployment_id, Status.READY)
    state = e.runpod_state(key)
    assert len(state["endpoints"]) == 1
    assert e.doc(deployment_id).runpod.endpoint_id == state["endpoints"][0]["id"]


def test_an_endpoint_created_before_a_crash_is_adopted(e: Env) -> None:
    from shared.endpoint_spec import endpoint_spec
    from shared.runpod.client import RunpodConnector

    key = e.account()
    deployment_id = e.create(key)
    e.scenario(start_delay_s=30)  # the orphan endpoint must not serve a worker of its own meanwhile
    ranked = list(ALL_POOLS)
    e.move(
        deployment_id,
        Status.SELECTING_GPU,
        model_commit_sha="a" * 40,
        vram_estimate_gb=2.5,
        pipeline_class="StableDiffusionPipeline",
    )
    e.move(deployment_id, Status.CREATING_ENDPOINT, gpu={"ranked": ranked, "window": ranked[:3]})
    # What a crashed attempt left behind: the endpoint on Runpod, its id not on the document.
    client = RunpodConnector(e.runpod, e.runpod, 10).client(key)
    orphan = client.create_endpoint(endpoint_spec(_settings(), e.doc(deployment_id), {}, ranked[:3]))

    assert e.provision(deployment_id).status_code == 200

    assert e.doc(deployment_id).runpod.endpoint_id == orphan.id
    assert len(e.runpod_state(key)["endpoints"]) == 1


def _settings() -> Any:
    from shared.config import ProvisioningSettings, get_settings

    return get_settings(ProvisioningSettings)


def test_no_capacity_in_the_first_pools_switches_to_the_next_ones(e: Env, intake_client: Any) -> None:
    key = e.account()
    e.scenario(capacity=dict.fromkeys(FIRST_WINDOW, 0))
    deployment_id = e.create(key)

    e.provision(deployment_id)
    doc = e.wait_status(deployment_id, Status.READY, Status.FAILED, timeout_s=20)

    assert doc.status == Status.READY.value, doc.error
    assert doc.gpu.window == SECOND_WINDOW  # what the user sees: the pools the endpoint now uses
    assert doc.gpu.switches == 1
    log = [line["message"] for line in e.store.events(deployment_id)]
    assert any("switched the endpoint to AMPERE_48" in line for line in log)
    endpoint = e.runpod_state(key)["endpoints"][0]
    assert endpoint["gpu"]["pools"] == SECOND_WINDOW
    seen = intake_client.get(f"/v1/deployments/{deployment_id}", headers={"Authorization": f"Bearer {key}"})
    assert seen.status_code == 200
    assert seen.json["gpu_pool"] == SECOND_WINDOW[0]  # the pool the worker landed in
    assert seen.json["gpu_candidates"] == SECOND_WINDOW


def test_no_capacity_anywhere_fails_and_leaves_nothing(e: Env) -> None:
    key = e.account()
    e.scenario(capacity=dict.fromkeys(ALL_POOLS, 0))
    deployment_id = e.create(key)

    e.provision(deployment_id)
    doc = e.wait_status(deployment_id, Status.FAILED, timeout_s=20)

    assert doc.error.code == "no_capacity"
    _eventually(_nothing_left(e, key))


def test_a_model_no_gpu_can_hold_fails_with_its_own_reason_before_any_endpoint(e: Env) -> None:
    key = e.account()
    deployment_id = e.create(key)
    e.move(deployment_id, Status.SELECTING_GPU, vram_estimate_gb=500.0)

    e.provision(deployment_id)
    doc = e.wait_status(deployment_id, Status.FAILED)

    assert doc.error.code == "no_gpu_fits"
    assert "500.0 GB of VRAM" in doc.error.message
    assert e.runpod_state(key)["endpoints"] == []


def test_the_estimate_uses_the_dtype_the_worker_will_load(models_root: Path) -> None:
    from shared.errors import PermanentError
    from shared.hub import HubInspector
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


def test_bad_runpod_key_fails_auth(e: Env) -> None:
    deployment_id = e.create("rpa_not_a_registered_key")

    assert e.provision(deployment_id).status_code == 200

    doc = e.wait_status(deployment_id, Status.FAILED)
    assert doc.error.code == "auth_failed"
    assert "rpa_not_a_registered_key" not in doc.model_dump_json()


def test_missing_model_fails_before_any_runpod_call(e: Env) -> None:
    key = e.account()
    deployment_id = e.create(key, model="visgate-test/does-not-exist")

    e.provision(deployment_id)
    e.provision(deployment_id)  # a redelivery after the failure does not reach Runpod either

    doc = e.wait_status(deployment_id, Status.FAILED)
    assert doc.error.code == "model_not_found"
    assert doc.runpod.endpoint_id is None
    assert e.runpod_state(key)["requests"] == 0


def test_an_invalid_hub_token_has_its_own_reason(e: Env) -> None:
    key = e.account()
    deployment_id = e.create(key, model=PIPE, hf_token="hf_expired_or_made_up")  # PIPE is public

    e.provision(deployment_id)

    doc = e.wait_status(deployment_id, Status.FAILED)
    assert doc.error.code == "hf_token_invalid"
    assert "invalid or expired" in doc.error.message
    assert e.runpod_state(key)["requests"] == 0


def test_gated_model_without_an_accepted_token_fails(e: Env) -> None:
    key = e.account()
    without = e.create(key, model=GATED)
    unaccepted = e.create(key, model=GATED, hf_token=HF_OTHER)

    e.provision(without)
    e.provision(unaccepted)

    assert e.wait_status(without, Status.FAILED).error.code == "model_gated"
    assert e.wait_status(unaccepted, Status.FAILED).error.code == "model_gated"
    assert e.runpod_state(key)["requests"] == 0


def test_gated_model_with_an_accepted_token_gets_ready(e: Env) -> None:
    key = e.account()
    deployment_id = e.create(key, model=GATED, hf_token=HF_ACCEPTED)

    e.provision(deployment_id)

    e.wait_status(deployment_id, Status.READY)
    assert e.runpod_state(key)["endpoints"][0]["env"]["HF_TOKEN"] == HF_ACCEPTED


def test_not_a_pipeline_is_unsupported(e: Env) -> None:
    key = e.account()
    deployment_id = e.create(key, model=ENCODER)

    e.provision(deployment_id)

    assert e.wait_status(deployment_id, Status.FAILED).error.code == "unsupported_model"
    assert e.runpod_state(key)["requests"] == 0


def test_forged_replayed_and_cross_deployment_reports_are_refused(e: Env) -> None:
    key = e.account()
    e.scenario(start_delay_s=30)  # keep the real (instant) worker quiet
    target, other = e.create(key), e.create(key)
    e.provision(target)
    before = e.doc(target)
    ready = {"deployment_id": target, "phase": "ready", "timings": {"download_s": 1, "load_s": 1, "warmup_s": 1}}

    forged = e.report(target, ready, "whsec_" + base64.b64encode(b"x" * 32).decode())
    replayed = e.report(target, ready, e.callback_secret(target), now=time.time() - 3600)
    crossed = e.report(target, {**ready, "deployment_id": other}, e.callback_secret(other))
    crossed_body = e.report(target, {**ready, "deployment_id": other}, e.callback_secret(target))

    assert [r.status_code for r in (forged, replayed, crossed, crossed_body)] == [401, 401, 401, 401]
    assert {r.json()["error"]["code"] for r in (forged, replayed, crossed, crossed_body)} == {"invalid_signature"}
    assert e.doc(target).status == before.status == Status.CREATING_ENDPOINT.value
    # The genuine report is accepted, and only moves forward.
    assert e.report(target, ready, e.callback_secret(target)).status_code == 204
    late = e.report(target, {"deployment_id": target, "phase": "loading_model"}, e.callback_secret(target))
    assert late.status_code == 204
    doc = e.doc(target)
    assert doc.status == Status.READY.value
    assert doc.timings.load_s == 1


def test_worker_failure_fails_and_tears_down(e: Env) -> None:
    key = e.account()
    e.scenario(worker_report="out_of_memory")
    deployment_id = e.create(key)

    e.provision(deployment_id)

    doc = e.wait_status(deployment_id, Status.FAILED)
    assert doc.error.code == "out_of_memory"
    _eventually(_nothing_left(e, key))


def test_a_worker_refused_an_invalid_hub_token_keeps_that_reason(e: Env) -> None:
    key = e.account()
    e.scenario(start_delay_s=30)  # keep the real (instant) worker quiet
    deployment_id = e.create(key)
    e.provision(deployment_id)
    e.wait_status(deployment_id, Status.CREATING_ENDPOINT)
    failed = {"deployment_id": deployment_id, "phase": "failed", "reason": "hf_token_invalid", "message": "expired"}

    assert e.report(deployment_id, failed, e.callback_secret(deployment_id)).status_code == 204
    assert e.wait_status(deployment_id, Status.FAILED).error.code == "hf_token_invalid"


def test_delete_during_provisioning_leaves_nothing(e: Env) -> None:
    key = e.account()
    e.scenario(start_delay_s=30)
    deployment_id = e.create(key)
    e.provision(deployment_id)
    assert e.runpod_state(key)["endpoints"]

    e.move(deployment_id, Status.DELETING)
    assert e.delete(deployment_id).status_code == 200

    assert e.doc(deployment_id).status == Status.DELETED.value
    assert _nothing_left(e, key)()
    assert e.store.secrets(deployment_id) is None
    # A late redelivery of the request creates nothing, and the delete can be repeated.
    assert e.provision(deployment_id).status_code == 200
    assert e.delete(deployment_id).status_code == 200
    assert _nothing_left(e, key)()


def test_delete_while_provision_is_creating_removes_what_it_created(e: Env) -> None:
    """The race: cleanup runs to the end between provision's endpoint create and its record."""
    from shared.messages import DeploymentDeleteRequested, DeploymentRequested
    from shared.runpod.client import Endpoint, EndpointSpec, RunpodClient
    from shared.steps.cleanup import cleanup
    from shared.steps.provision import provision
    from shared.wiring import step_deps

    key = e.account()
    deployment_id = e.create(key)
    deps = step_deps(_settings())
    e.move(deployment_id, Status.SELECTING_GPU, vram_estimate_gb=2.5, model_commit_sha="b" * 40)
    e.move(deployment_id, Status.CREATING_ENDPOINT, gpu={"window": FIRST_WINDOW})
    real_save = RunpodClient.create_endpoint

    def save_then_delete(self: RunpodClient, spec: EndpointSpec) -> Endpoint:
        created = real_save(self, spec)
        e.move(deployment_id, Status.DELETING)
        cleanup(DeploymentDeleteRequested(deployment_id=deployment_id, requested_at=utcnow()), deps)
        return created

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunpodClient, "create_endpoint", save_then_delete)
        outcome = provision(DeploymentRequested(deployment_id=deployment_id, requested_at=utcnow()), deps)

    assert "removed what was created" in outcome
    assert e.doc(deployment_id).status == Status.DELETED.value
    assert _nothing_left(e, key)()


def test_a_worker_that_crashes_at_start_fails_the_deployment(e: Env) -> None:
    key = e.account()
    e.scenario(crash_on_start=True)
    deployment_id = e.create(key)

    e.provision(deployment_id)

    doc = e.wait_status(deployment_id, Status.FAILED)
    assert doc.error.code == "image_pull_failed"
    _eventually(_nothing_left(e, key))


def test_past_the_deadline_the_watchdog_fails_with_timeout(e: Env) -> None:
    from datetime import timedelta

    key = e.account()
    e.scenario(start_delay_s=30)
    deployment_id = e.create(key)
    e.provision(deployment_id)
    long_ago = utcnow() - timedelta(hours=1)
    e.set(deployment_id, phase_timestamps={**e.doc(deployment_id).phase_timestamps, Status.CREATING_ENDPOINT: long_ago})

    answer = requests.post(
        f"{e.functions}/readiness",
        json={"deployment_id": deployment_id, "check": 1000},
        headers={"X-CloudTasks-TaskName": f"readiness-{deployment_id}-1000", "X-CloudTasks-TaskRetryCount": "0"},
        timeout=10,
    )

    assert answer.status_code == 204
    doc = e.doc(deployment_id)
    assert doc.status == Status.FAILED.value
    assert doc.error.code == "timeout"
    assert _nothing_left(e, key)()


# --- delivery rules: what is acknowledged, dropped or retried (shared.steps.runner) --------------------------------


def _raw_push(
    e: Env, fn: str, topic: str, data: bytes, publish_time: datetime, *, message_id: str = ""
) -> requests.Response:
    message = {
        "data": base64.b64encode(data).decode(),
        "messageId": message_id or uuid.uuid4().hex,
        "publishTime": publish_time.isoformat().replace("+00:00", "Z"),
    }
    body = {"message": message, "subscription": f"projects/test/subscriptions/{fn}-push"}
    return requests.post(f"{e.functions}/{fn}/_pubsub/{topic}", json=body, timeout=30)


def _json_logs(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(line) for line in caplog.text.splitlines() if line.startswith("{")]


def test_malformed_delivery_is_acknowledged_and_changes_nothing(e: Env, caplog: pytest.LogCaptureFixture) -> None:
    from shared.logging import JsonFormatter

    caplog.handler.setFormatter(JsonFormatter())
    deployment_id = e.create(e.account())
    message_id = uuid.uuid4().hex
    resp = _raw_push(
        e, "provision", TOPIC_DEPLOYMENT_REQUESTED, b'{"not": "a request"}', datetime.now(UTC), message_id=message_id
    )
    assert resp.status_code == 200  # a retry could not fix it: acknowledged, not redelivered forever
    assert e.doc(deployment_id).status == Status.VALIDATING.value
    dropped = [line for line in _json_logs(caplog) if line["message"].startswith("dropped a malformed delivery")]
    assert [line["execution_id"] for line in dropped] == [message_id]


def test_an_unexpected_error_is_logged_with_the_deployment_and_retried(
    e: Env, db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from shared.logging import JsonFormatter
    from shared.store import DEPLOYMENTS

    caplog.handler.setFormatter(JsonFormatter())
    deployment_id = e.create(e.account())
    db.collection(DEPLOYMENTS).document(deployment_id).update({"status": "no-such-status"})  # a bug, say
    assert e.provision(deployment_id).status_code == 500  # retried: the bug may be fixed by a redeploy
    unhandled = [
        line for line in _json_logs(caplog) if line["message"].startswith("unhandled ValidationError in provision")
    ]
    assert len(unhandled) == 1
    assert unhandled[0]["deployment_id"] == deployment_id
    assert unhandled[0]["step"] == "provision"
    assert "no-such-status" not in unhandled[0]["message"]  # the type and stack only, never the text


def test_stale_delivery_is_dropped(e: Env) -> None:
    deployment_id = e.create(e.account())
    payload = json.dumps({"deployment_id": deployment_id, "requested_at": utcnow().isoformat()}).encode()
    old = datetime.fromtimestamp(time.time() - 2 * 86400, UTC)
    assert _raw_push(e, "provision", TOPIC_DEPLOYMENT_REQUESTED, payload, old).status_code == 200
    assert e.doc(deployment_id).status == Status.VALIDATING.value


def test_runpod_outage_is_retried_then_provisioning_resumes(e: Env) -> None:
    key = e.account()
    deployment_id = e.create(key)
    e.scenario(api_errors=1000)
    try:
        assert e.provision(deployment_id).status_code == 500  # retryable: Pub/Sub delivers again
        assert e.doc(deployment_id).status != Status.FAILED.value
    finally:
        e.scenario(api_errors=0)
    assert e.provision(deployment_id).status_code == 200
    assert e.wait_status(deployment_id, Status.READY).error is None
    assert len(e.runpod_state(key)["endpoints"]) == 1


def test_cleanup_of_a_deleted_deployment_is_a_noop(e: Env) -> None:
    key = e.account()
    deployment_id = e.create(key)
    e.move(deployment_id, Status.DELETING)
    assert e.delete(deployment_id).status_code == 200
    e.wait_status(deployment_id, Status.DELETED)
    assert e.delete(deployment_id).status_code == 200
    assert e.doc(deployment_id).status == Status.DELETED.value
    assert e.store.secrets(deployment_id) is None


# --- hardening: crashes and failures between steps, and what real Runpod does that the happy path never shows -----


def _request(deployment_id: str) -> Any:
    from shared.messages import DeploymentRequested

    return DeploymentRequested(deployment_id=deployment_id, requested_at=utcnow())


def _provisioned_unwatched(e: Env, key: str) -> str:
    """A deployment provisioned by the step itself with its watchdog task left out, so nothing else acts on it."""
    from shared.steps.provision import provision
    from shared.tasks import TaskScheduler
    from shared.wiring import step_deps

    deployment_id = e.create(key)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TaskScheduler, "schedule", lambda *args, **kwargs: True)
        provision(_request(deployment_id), step_deps(_settings()))
    assert e.doc(deployment_id).status == Status.CREATING_ENDPOINT.value
    return deployment_id


def test_the_watchdog_is_scheduled_before_the_warm_up_and_again_by_a_later_delivery(e: Env) -> None:
    from shared.errors import RetryableError
    from shared.steps.provision import provision
    from shared.tasks import TaskScheduler
    from shared.wiring import step_deps

    key = e.account()
    e.scenario(start_delay_s=30)
    deployment_id = e.create(key)
    deps = step_deps(_settings())
    real_schedule = TaskScheduler.schedule
    names: list[str] = []

    def unavailable(*args: Any, **kwargs: Any) -> bool:
        raise RetryableError("Cloud Tasks is unavailable")

    def recorded(self: TaskScheduler, *args: Any, **kwargs: Any) -> bool:
        names.append(kwargs["name"])
        return real_schedule(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TaskScheduler, "schedule", unavailable)
        with pytest.raises(RetryableError):
            provision(_request(deployment_id), deps)
        # No watchdog, no warm-up: nothing starts a worker that nobody would watch.
        assert e.runpod_state(key)["jobs"] == []
        # A worker reports before the redelivery (workersMin > 0 starts one as soon as the endpoint exists).
        e.move(deployment_id, Status.DOWNLOADING_MODEL)
        patch.setattr(TaskScheduler, "schedule", recorded)
        outcome = provision(_request(deployment_id), deps)

    assert "provisioned already" in outcome
    assert names == [f"readiness-{deployment_id}-0"]


def test_of_two_concurrent_creates_the_attempt_that_loses_removes_its_endpoint(e: Env) -> None:
    from shared.runpod.client import Endpoint, EndpointSpec, RunpodClient
    from shared.steps.provision import provision
    from shared.wiring import step_deps

    key = e.account()
    e.scenario(start_delay_s=30)
    deployment_id = e.create(key)
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
    endpoints = e.runpod_state(key)["endpoints"]
    assert [endpoint["id"] for endpoint in endpoints] == [e.doc(deployment_id).runpod.endpoint_id]


def test_a_delete_runs_however_late_and_a_late_repeat_changes_nothing(e: Env) -> None:
    key = e.account()
    e.scenario(start_delay_s=30)
    deployment_id = _provisioned_unwatched(e, key)
    e.move(deployment_id, Status.DELETING)
    payload = {"deployment_id": deployment_id, "requested_at": utcnow().isoformat(), "reason": "user"}
    two_days_ago = datetime.fromtimestamp(time.time() - 2 * 86400, UTC)

    late = _raw_push(e, "cleanup", TOPIC_DEPLOYMENT_DELETE_REQUESTED, json.dumps(payload).encode(), two_days_ago)

    assert late.status_code == 200
    deleted = e.doc(deployment_id)
    assert deleted.status == Status.DELETED.value
    assert _nothing_left(e, key)()
    assert e.store.secrets(deployment_id) is None
    lines = len(e.store.events(deployment_id))
    again = _raw_push(e, "cleanup", TOPIC_DEPLOYMENT_DELETE_REQUESTED, json.dumps(payload).encode(), two_days_ago)
    assert again.status_code == 200
    assert e.doc(deployment_id).updated_at == deleted.updated_at
    assert len(e.store.events(deployment_id)) == lines


def test_a_late_provision_delivery_still_finishes_a_failed_teardown(e: Env) -> None:
    key = e.account()
    e.scenario(start_delay_s=30)
    deployment_id = _provisioned_unwatched(e, key)
    # It failed while Runpod was unreachable: marked failed, nothing torn down yet.
    e.move(deployment_id, Status.FAILED, error={"code": "timeout", "message": "x"})
    payload = json.dumps({"deployment_id": deployment_id, "requested_at": utcnow().isoformat()}).encode()
    two_days_ago = datetime.fromtimestamp(time.time() - 2 * 86400, UTC)

    assert _raw_push(e, "provision", TOPIC_DEPLOYMENT_REQUESTED, payload, two_days_ago).status_code == 200

    assert _nothing_left(e, key)()
    assert e.doc(deployment_id).runpod.torn_down_at is not None


def _throttled_everywhere(e: Env, key: str) -> str:
    """A provisioned deployment whose worker waits for capacity, throttled since long ago; returns its id."""
    from datetime import timedelta

    e.scenario(capacity=dict.fromkeys(ALL_POOLS, 0))
    deployment_id = _provisioned_unwatched(e, key)
    long_ago = utcnow() - timedelta(minutes=5)
    e.set(deployment_id, readiness={"check": 0, "last_check_at": long_ago, "throttled_since": long_ago})
    _eventually(lambda: [w["state"] for w in e.runpod_state(key)["workers"]] == ["throttled"])
    return deployment_id


def _check(deployment_id: str, check: int) -> Any:
    from shared.envelopes import TaskDelivery
    from shared.messages import ReadinessCheck

    message = ReadinessCheck(deployment_id=deployment_id, check=check)
    return TaskDelivery(message, task_name=f"readiness-{deployment_id}-{check}", retry_count=0, queue=QUEUE_READINESS)


def test_a_gpu_switch_retried_after_a_failed_publish_switches_once(e: Env) -> None:
    from shared.errors import RetryableError
    from shared.messages import _Message
    from shared.pubsub import Publisher
    from shared.steps.readiness import check_readiness
    from shared.tasks import TaskScheduler
    from shared.topology import TOPIC_DEPLOYMENT_EVENTS
    from shared.wiring import step_deps

    key = e.account()
    deployment_id = _throttled_everywhere(e, key)
    deps = step_deps(_settings())
    real_publish = Publisher.publish
    failed: list[str] = []

    def publish_fails_once(self: Publisher, topic: str, message: _Message, **attributes: str) -> str:
        if topic == TOPIC_DEPLOYMENT_EVENTS and not failed:
            failed.append(topic)
            raise RetryableError("Pub/Sub is unavailable")
        return real_publish(self, topic, message, **attributes)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Publisher, "publish", publish_fails_once)
        patch.setattr(TaskScheduler, "schedule", lambda *args, **kwargs: True)
        with pytest.raises(RetryableError):
            check_readiness(_check(deployment_id, 1), deps)
        _eventually(lambda: [w["state"] for w in e.runpod_state(key)["workers"]] == ["throttled"])
        check_readiness(_check(deployment_id, 1), deps)  # Cloud Tasks retries the same check

    doc = e.doc(deployment_id)
    assert (doc.gpu.switches, doc.gpu.window) == (1, SECOND_WINDOW)
    assert e.runpod_state(key)["endpoints"][0]["gpu"]["pools"] == SECOND_WINDOW


def test_a_check_retried_after_the_switch_was_written_gives_the_new_pools_their_wait(e: Env) -> None:
    from shared.errors import RetryableError
    from shared.steps.readiness import check_readiness
    from shared.tasks import TaskScheduler
    from shared.wiring import step_deps

    key = e.account()
    deployment_id = _throttled_everywhere(e, key)
    deps = step_deps(_settings())
    real_update = DeploymentStore.update
    failed: list[bool] = []

    def next_check_write_fails_once(self: DeploymentStore, deployment_id: str, change: Any, **kwargs: Any) -> Any:
        if change.__name__ == "record_check" and not failed:  # the write that records the check
            failed.append(True)
            raise RetryableError("Firestore kept changing")
        return real_update(self, deployment_id, change, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DeploymentStore, "update", next_check_write_fails_once)
        patch.setattr(TaskScheduler, "schedule", lambda *args, **kwargs: True)
        with pytest.raises(RetryableError):
            check_readiness(_check(deployment_id, 1), deps)
        note = check_readiness(_check(deployment_id, 1), deps)

    # The retry does not switch again, whatever the replacement worker is doing at that instant (the simulator
    # replaces throttled workers on a config change asynchronously: none, or a new one waiting for capacity).
    assert "switched" not in note
    doc = e.doc(deployment_id)
    assert (doc.gpu.switches, doc.gpu.window) == (1, SECOND_WINDOW)
    assert doc.readiness.check == 1


def test_an_endpoint_deleted_on_runpod_fails_the_deployment_instead_of_retrying(e: Env) -> None:
    from shared.runpod.client import RunpodConnector

    key = e.account()
    e.scenario(start_delay_s=30)
    deployment_id = _provisioned_unwatched(e, key)
    client = RunpodConnector(e.runpod, e.runpod, 10).client(key)
    client.delete_endpoint(e.doc(deployment_id).runpod.endpoint_id or "")  # someone deleted it in Runpod's console

    answer = requests.post(
        f"{e.functions}/readiness",
        json={"deployment_id": deployment_id, "check": 1},
        headers={"X-CloudTasks-TaskName": f"readiness-{deployment_id}-1", "X-CloudTasks-TaskRetryCount": "0"},
        timeout=10,
    )

    assert answer.status_code == 204
    doc = e.doc(deployment_id)
    assert (doc.status, doc.error.code) == (Status.FAILED.value, "runpod_resource_missing")
    assert _nothing_left(e, key)()


def test_a_check_whose_next_check_failed_to_schedule_schedules_it_on_retry(e: Env) -> None:
    from shared.errors import RetryableError
    from shared.steps.readiness import check_readiness
    from shared.tasks import TaskScheduler
    from shared.wiring import step_deps

    key = e.account()
    e.scenario(start_delay_s=30)
    deployment_id = _provisioned_unwatched(e, key)
    deps = step_deps(_settings())
    names: list[str] = []

    def unavailable(*args: Any, **kwargs: Any) -> bool:
        raise RetryableError("Cloud Tasks is unavailable")

    def recorded(self: TaskScheduler, *args: Any, **kwargs: Any) -> bool:
        names.append(kwargs["name"])
        return True

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TaskScheduler, "schedule", unavailable)
        with pytest.raises(RetryableError):
            check_readiness(_check(deployment_id, 1), deps)
        patch.setattr(TaskScheduler, "schedule", recorded)
        check_readiness(_check(deployment_id, 1), deps)

    # The watch goes on: the retry scheduled check 2 and only then recorded check 1 as done.
    assert names == [f"readiness-{deployment_id}-2"]
    assert e.doc(deployment_id).readiness.check == 1


# --- teardown that Runpod refuses, and sealed credentials that no longer open -------------------------------------


def test_a_runpod_refusal_during_a_delete_keeps_it_deleting_and_is_retried(e: Env) -> None:
    key = e.account()
    deployment_id = e.create(key)
    assert e.provision(deployment_id).status_code == 200
    e.wait_status(deployment_id, Status.READY)
    e.scenario(api_refusals=1)  # the teardown's first call is refused (400 problem+json)
    try:
        before = e.runpod_state(key)["requests"]
        assert e.delete(deployment_id).status_code == 500  # retried, once: one refused call, no second teardown
        assert e.runpod_state(key)["requests"] - before == 1
    finally:
        e.scenario(api_refusals=0)
    doc = e.doc(deployment_id)
    assert doc.status == Status.DELETING.value
    assert doc.error is None
    assert e.delete(deployment_id).status_code == 200
    e.wait_status(deployment_id, Status.DELETED)
    _eventually(_nothing_left(e, key))


def _seal_with_another_key(e: Env, deployment_id: str, key: str) -> None:
    """What a rotated SEALING_KEY leaves behind: a blob the functions' key cannot open."""
    from shared.store import SECRETS

    other = Sealer(base64.b64encode(secrets.token_bytes(32)).decode())
    sealed = other.seal(deployment_id, SealedCredentials(runpod_api_key=key))
    e.store._db.collection(SECRETS).document(deployment_id).update({"sealed": sealed})


def test_provisioning_with_credentials_that_do_not_open_fails_for_good(e: Env) -> None:
    key = e.account()
    deployment_id = e.create(key)
    _seal_with_another_key(e, deployment_id, key)

    assert e.provision(deployment_id).status_code == 200  # acknowledged: no retry opens them

    doc = e.wait_status(deployment_id, Status.FAILED)
    assert doc.error.code == "internal"
    assert "sealed credentials do not open" in doc.error.message
    assert e.runpod_state(key)["requests"] == 0


def test_a_delete_whose_credentials_do_not_open_names_what_is_left_on_runpod(e: Env) -> None:
    key = e.account()
    deployment_id = e.create(key)
    assert e.provision(deployment_id).status_code == 200
    ready = e.wait_status(deployment_id, Status.READY)
    _seal_with_another_key(e, deployment_id, key)

    assert e.delete(deployment_id).status_code == 200  # ends: retrying cannot open them either

    e.wait_status(deployment_id, Status.DELETED)
    last = e.store.events(deployment_id)[-1]
    assert last["level"] == "error"
    assert "Runpod resources removed" not in last["message"]
    assert "could not be removed" in last["message"]
    assert ready.runpod.endpoint_id in last["message"]
    assert len(e.runpod_state(key)["endpoints"]) == 1  # true: it is still there
    assert e.store.secrets(deployment_id) is None


# --- tasks and LoRA adapters (issue 13) --------------------------------------------------------------------------


def test_a_task_the_model_has_reaches_the_worker_env(e: Env) -> None:
    key = e.account()
    deployment_id = e.create(key, task="inpainting")

    e.provision(deployment_id)

    doc = e.wait_status(deployment_id, Status.READY)
    assert doc.task == "inpainting"
    template_env = e.runpod_state(key)["endpoints"][0]["env"]
    assert template_env["WORKER_TASK"] == "inpainting"
    assert "WORKER_LORAS" not in template_env


@pytest.mark.parametrize("task", ["image_to_image", "inpainting"])
def test_a_task_the_model_cannot_do_fails_before_any_runpod_call(e: Env, task: str) -> None:
    key = e.account()
    deployment_id = e.create(key, model=PIXART, task=task)

    e.provision(deployment_id)

    error = e.wait_status(deployment_id, Status.FAILED).error.model_dump()
    assert error["code"] == "unsupported_model"
    assert error["message"] == (f"{PIXART} is a PixArtSigmaPipeline, which cannot do {task}; it can do: text_to_image")
    assert e.runpod_state(key)["requests"] == 0


def test_loras_are_pinned_to_a_commit_and_passed_to_the_worker(e: Env) -> None:
    key = e.account()
    loras = [
        {"hf_model_id": LORA, "scale": 0.5},
        {"hf_model_id": LORA_GATED, "weight_name": "pytorch_lora_weights.safetensors"},
        {"hf_model_id": LORA_TWO, "weight_name": "b.safetensors", "scale": -1.0},
    ]
    deployment_id = e.create(key, hf_token=HF_ACCEPTED, task="image_to_image", loras=loras)

    e.provision(deployment_id)

    doc = e.wait_status(deployment_id, Status.READY)
    template_env = e.runpod_state(key)["endpoints"][0]["env"]
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
    e: Env, lora: dict[str, Any], token: str | None, code: str, message: str
) -> None:
    key = e.account()
    deployment_id = e.create(key, hf_token=token, loras=[lora])

    e.provision(deployment_id)

    error = e.wait_status(deployment_id, Status.FAILED).error.model_dump()
    assert error["code"] == code
    assert message in error["message"]
    assert e.runpod_state(key)["requests"] == 0


def test_loras_on_a_pipeline_without_a_lora_loader_are_unsupported(e: Env) -> None:
    key = e.account()
    deployment_id = e.create(key, model=PIXART, loras=[{"hf_model_id": LORA}])

    e.provision(deployment_id)

    error = e.wait_status(deployment_id, Status.FAILED).error.model_dump()
    assert error["code"] == "unsupported_model"
    assert "takes no LoRA adapters" in error["message"]

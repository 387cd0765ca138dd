"""The provisioning harness: a Hub folder of test models, the functions host with provision, callback, readiness
and cleanup on a local port, and :class:`Env`, what a test drives them with.

The functions run in a functions host served on a local port (the Runpod simulator's instant workers call the
callback URL, the Cloud Tasks emulator calls the readiness URL). Deliveries to provision and cleanup are posted
as Pub/Sub pushes straight to that host, not published: a reused `make up` stack subscribes to the same topics.
Each test uses its own Runpod account (a fresh API key), so "nothing left" is checked per account.

Fixtures (registered for tests/integration by its conftest): ``models_root`` (the Hub folder, per module),
``provisioning_env`` (the functions host and the Hub simulator, per module) and ``provisioning`` (that environment,
with the Runpod simulator's scenario reset after each test).
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2

from local.processes import free_port
from shared.creation import NewDeployment
from shared.crypto import Sealer, secret_hash, tenant_id
from shared.document import Deployment
from shared.intake.steps import _initial_document
from shared.lifecycle import Status
from shared.models import CreateDeploymentRequest, SealedCredentials
from shared.signing import sign_headers
from shared.store import DeploymentStore, utcnow
from shared.topology import QUEUE_READINESS, TOPIC_DEPLOYMENT_DELETE_REQUESTED, TOPIC_DEPLOYMENT_REQUESTED, function
from tests.support.serving import Served
from tests.support.waiting import eventually

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
    """A Hub folder the Hub simulator serves: diffusers-shaped pipelines (public, gated, bf16, broken, PixArt), an
    encoder that is no pipeline, and LoRA repos."""
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
        return eventually(
            lambda: (doc := self.doc(deployment_id)).status in wanted and doc,
            timeout_s,
            what=lambda: f"{deployment_id} is {self.doc(deployment_id).status}, not {wanted}",
        )

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
def provisioning_env(
    intake_env: None, tasks_emulator: str, models_root: Path, db: Any, runpod_simulator: str
) -> Iterator[Env]:
    """The functions host (provision, callback, readiness, cleanup) on a local port, the Hub simulator serving
    ``models_root``, and the settings they read; one per test module."""
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
        env = Env(DeploymentStore(db), sealer, pepper, runpod_simulator, host.url)
        _warm_up(env)
        yield env
        host.stop()
        hub.stop()
    get_settings.cache_clear()


def _warm_up(env: Env) -> None:
    """One deployment to ready, so that the functions host is warm as a long-running instance is: its GPU catalog
    read and cached with every pool available. A test that takes capacity away afterwards (the switch to the next
    pools) relies on it, whichever test of its module runs first. (Not deleted: its account is its own, and a
    delivery to cleanup here would make functions_framework refuse test_callback_errors' later app set-up.)"""
    key = env.account()
    deployment_id = env.create(key)
    env.provision(deployment_id)
    env.wait_status(deployment_id, Status.READY, timeout_s=20)


def _ensure_queue(project: str, region: str, tasks_host: str) -> None:
    from shared.wiring import build_tasks_client

    client = build_tasks_client(tasks_host)
    parent = f"projects/{project}/locations/{region}"
    try:
        client.create_queue(parent=parent, queue=tasks_v2.Queue(name=f"{parent}/queues/{QUEUE_READINESS}"))
    except gexc.AlreadyExists:
        pass


@pytest.fixture
def provisioning(provisioning_env: Env) -> Iterator[Env]:
    """The provisioning environment, with the simulator's scenario back to plain afterwards."""
    yield provisioning_env
    provisioning_env.scenario(capacity={}, start_delay_s=0, crash_on_start=False, worker_report="ready")


def _nothing_left(e: Env, key: str) -> Callable[[], bool]:
    def check() -> bool:
        state = e.runpod_state(key)
        return not state["endpoints"]

    return check


def _settings() -> Any:
    from shared.config import BackgroundSettings, get_settings

    return get_settings(BackgroundSettings)


def _raw_push(
    provisioning: Env, fn: str, topic: str, data: bytes, publish_time: datetime, *, message_id: str = ""
) -> requests.Response:
    message = {
        "data": base64.b64encode(data).decode(),
        "messageId": message_id or uuid.uuid4().hex,
        "publishTime": publish_time.isoformat().replace("+00:00", "Z"),
    }
    body = {"message": message, "subscription": f"projects/test/subscriptions/{fn}-push"}
    return requests.post(f"{provisioning.functions}/{fn}/_pubsub/{topic}", json=body, timeout=30)


def _request(deployment_id: str) -> Any:
    from shared.messages import DeploymentRequested

    return DeploymentRequested(deployment_id=deployment_id, requested_at=utcnow())


def _provisioned_unwatched(provisioning: Env, key: str) -> str:
    """A deployment provisioned by the step itself with its watchdog task left out, so nothing else acts on it."""
    from shared.deployments.provision import provision
    from shared.tasks import TaskScheduler
    from shared.wiring import step_deps

    deployment_id = provisioning.create(key)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TaskScheduler, "schedule", lambda *args, **kwargs: True)
        provision(_request(deployment_id), step_deps(_settings()))
    assert provisioning.doc(deployment_id).status == Status.CREATING_ENDPOINT.value
    return deployment_id


def _seal_with_another_key(provisioning: Env, deployment_id: str, key: str) -> None:
    """What a rotated SEALING_KEY leaves behind: a blob the functions' key cannot open."""
    from shared.store import SECRETS

    other = Sealer(base64.b64encode(secrets.token_bytes(32)).decode())
    sealed = other.seal(deployment_id, SealedCredentials(runpod_api_key=key))
    provisioning.store._db.collection(SECRETS).document(deployment_id).update({"sealed": sealed})

"""callback (HTTP) end to end: the worker's signed phase reports; forged ones are refused, failures fail and tear down.

The harness (the functions host, the simulators, ``Env``) is tests/support/provisioning.py.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import time

import requests

from shared.lifecycle import Status
from shared.signing import sign_headers
from tests.support.provisioning import Env, _nothing_left
from tests.support.waiting import eventually


def test_forged_replayed_and_cross_deployment_reports_are_refused(provisioning: Env) -> None:
    key = provisioning.account()
    provisioning.scenario(start_delay_s=30)  # keep the real (instant) worker quiet
    target, other = provisioning.create(key), provisioning.create(key)
    provisioning.provision(target)
    before = provisioning.doc(target)
    ready = {"deployment_id": target, "phase": "ready", "timings": {"download_s": 1, "load_s": 1, "warmup_s": 1}}

    forged = provisioning.report(target, ready, "whsec_" + base64.b64encode(b"x" * 32).decode())
    replayed = provisioning.report(target, ready, provisioning.callback_secret(target), now=time.time() - 3600)
    crossed = provisioning.report(target, {**ready, "deployment_id": other}, provisioning.callback_secret(other))
    crossed_body = provisioning.report(target, {**ready, "deployment_id": other}, provisioning.callback_secret(target))

    assert [r.status_code for r in (forged, replayed, crossed, crossed_body)] == [401, 401, 401, 401]
    assert {r.json()["error"]["code"] for r in (forged, replayed, crossed, crossed_body)} == {"invalid_signature"}
    assert provisioning.doc(target).status == before.status == Status.CREATING_ENDPOINT.value
    # The genuine report is accepted, and only moves forward.
    assert provisioning.report(target, ready, provisioning.callback_secret(target)).status_code == 204
    late = provisioning.report(
        target, {"deployment_id": target, "phase": "loading_model"}, provisioning.callback_secret(target)
    )
    assert late.status_code == 204
    doc = provisioning.doc(target)
    assert doc.status == Status.READY.value
    assert doc.timings.load_s == 1


def test_worker_failure_fails_and_tears_down(provisioning: Env) -> None:
    key = provisioning.account()
    provisioning.scenario(worker_report="out_of_memory")
    deployment_id = provisioning.create(key)

    provisioning.provision(deployment_id)

    doc = provisioning.wait_status(deployment_id, Status.FAILED)
    assert doc.error.code == "out_of_memory"
    eventually(_nothing_left(provisioning, key))


def test_a_worker_refused_an_invalid_hub_token_keeps_that_reason(provisioning: Env) -> None:
    key = provisioning.account()
    provisioning.scenario(start_delay_s=30)  # keep the real (instant) worker quiet
    deployment_id = provisioning.create(key)
    provisioning.provision(deployment_id)
    provisioning.wait_status(deployment_id, Status.CREATING_ENDPOINT)
    failed = {"deployment_id": deployment_id, "phase": "failed", "reason": "hf_token_invalid", "message": "expired"}

    assert provisioning.report(deployment_id, failed, provisioning.callback_secret(deployment_id)).status_code == 204
    assert provisioning.wait_status(deployment_id, Status.FAILED).error.code == "hf_token_invalid"


def test_a_replayed_report_is_409_and_changes_nothing(provisioning: Env) -> None:
    """A captured ``ready`` replayed within the tolerance window after a stop and start (issue 18)."""
    key = provisioning.account()
    provisioning.scenario(start_delay_s=30)  # keep the real (instant) worker quiet
    target = provisioning.create(key)
    provisioning.provision(target)
    secret = provisioning.callback_secret(target)
    url = f"{provisioning.functions}/callback/v1/deployments/{target}/phase"
    ready = {"schema_version": 1, "deployment_id": target, "phase": "ready", "timings": {"load_s": 1}}
    raw = json.dumps(ready).encode()
    captured = {"Content-Type": "application/json", **sign_headers(secret, raw)}
    assert requests.post(url, data=raw, headers=captured, timeout=10).status_code == 204
    assert provisioning.doc(target).status == Status.READY.value

    provisioning.move(target, Status.STOPPED)
    provisioning.move(target, Status.DOWNLOADING_MODEL)  # started again: the worker must prove the model anew
    replayed = requests.post(url, data=raw, headers=captured, timeout=10)
    assert replayed.status_code == 409
    assert replayed.json()["error"]["code"] == "report_replayed"
    assert replayed.json()["error"]["request_id"]
    assert provisioning.doc(target).status == Status.DOWNLOADING_MODEL.value

    # Two copies of one fresh report at once: exactly one is taken.
    loading = json.dumps({"schema_version": 1, "deployment_id": target, "phase": "loading_model"}).encode()
    headers = {"Content-Type": "application/json", **sign_headers(secret, loading)}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: requests.post(url, data=loading, headers=headers, timeout=10), range(4)))
    assert sorted(a.status_code for a in answers) == [204, 409, 409, 409]
    assert provisioning.doc(target).status == Status.LOADING_MODEL.value
    # A new report (its own webhook-id) is taken as before.
    assert provisioning.report(target, {"deployment_id": target, "phase": "ready"}, secret).status_code == 204
    assert provisioning.doc(target).status == Status.READY.value

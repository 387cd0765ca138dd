"""cleanup (Pub/Sub ``deployment-delete-requested``) end to end: a delete leaves nothing on Runpod, however late it
runs, and keeps retrying what Runpod refuses.

The harness (the functions host, the simulators, ``Env``) is tests/support/provisioning.py.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import UTC, datetime

from google.cloud import firestore

from shared.jobs.invoke_keys import InvokeKeyStore
from shared.lifecycle import Status
from shared.store import INVOKE_KEY_COUNTS, utcnow
from shared.topology import TOPIC_DEPLOYMENT_DELETE_REQUESTED
from tests.support.provisioning import (
    Env,
    _nothing_left,
    _provisioned_unwatched,
    _raw_push,
    _seal_with_another_key,
)
from tests.support.waiting import eventually


def test_delete_during_provisioning_leaves_nothing(provisioning: Env) -> None:
    key = provisioning.account()
    provisioning.scenario(start_delay_s=30)
    deployment_id = provisioning.create(key)
    provisioning.provision(deployment_id)
    assert provisioning.runpod_state(key)["endpoints"]

    provisioning.move(deployment_id, Status.DELETING)
    assert provisioning.delete(deployment_id).status_code == 200

    assert provisioning.doc(deployment_id).status == Status.DELETED.value
    assert _nothing_left(provisioning, key)()
    assert provisioning.store.secrets(deployment_id) is None
    # A late redelivery of the request creates nothing, and the delete can be repeated.
    assert provisioning.provision(deployment_id).status_code == 200
    assert provisioning.delete(deployment_id).status_code == 200
    assert _nothing_left(provisioning, key)()


def test_cleanup_of_a_deleted_deployment_is_a_noop(provisioning: Env) -> None:
    key = provisioning.account()
    deployment_id = provisioning.create(key)
    provisioning.move(deployment_id, Status.DELETING)
    assert provisioning.delete(deployment_id).status_code == 200
    provisioning.wait_status(deployment_id, Status.DELETED)
    assert provisioning.delete(deployment_id).status_code == 200
    assert provisioning.doc(deployment_id).status == Status.DELETED.value
    assert provisioning.store.secrets(deployment_id) is None


def test_a_delete_runs_however_late_and_a_late_repeat_changes_nothing(provisioning: Env) -> None:
    key = provisioning.account()
    provisioning.scenario(start_delay_s=30)
    deployment_id = _provisioned_unwatched(provisioning, key)
    provisioning.move(deployment_id, Status.DELETING)
    payload = {"deployment_id": deployment_id, "requested_at": utcnow().isoformat(), "reason": "user"}
    two_days_ago = datetime.fromtimestamp(time.time() - 2 * 86400, UTC)

    late = _raw_push(
        provisioning, "cleanup", TOPIC_DEPLOYMENT_DELETE_REQUESTED, json.dumps(payload).encode(), two_days_ago
    )

    assert late.status_code == 200
    deleted = provisioning.doc(deployment_id)
    assert deleted.status == Status.DELETED.value
    assert _nothing_left(provisioning, key)()
    assert provisioning.store.secrets(deployment_id) is None
    lines = len(provisioning.store.events(deployment_id))
    again = _raw_push(
        provisioning, "cleanup", TOPIC_DEPLOYMENT_DELETE_REQUESTED, json.dumps(payload).encode(), two_days_ago
    )
    assert again.status_code == 200
    assert provisioning.doc(deployment_id).updated_at == deleted.updated_at
    assert len(provisioning.store.events(deployment_id)) == lines


def test_a_runpod_refusal_during_a_delete_keeps_it_deleting_and_is_retried(provisioning: Env) -> None:
    key = provisioning.account()
    deployment_id = provisioning.create(key)
    assert provisioning.provision(deployment_id).status_code == 200
    provisioning.wait_status(deployment_id, Status.READY)
    provisioning.scenario(api_refusals=1)  # the teardown's first call is refused (400 problem+json)
    try:
        before = provisioning.runpod_state(key)["requests"]
        assert (
            provisioning.delete(deployment_id).status_code == 500
        )  # retried, once: one refused call, no second teardown
        assert provisioning.runpod_state(key)["requests"] - before == 1
    finally:
        provisioning.scenario(api_refusals=0)
    doc = provisioning.doc(deployment_id)
    assert doc.status == Status.DELETING.value
    assert doc.error is None
    assert provisioning.delete(deployment_id).status_code == 200
    provisioning.wait_status(deployment_id, Status.DELETED)
    eventually(_nothing_left(provisioning, key))


def test_a_delete_whose_credentials_do_not_open_names_what_is_left_on_runpod(provisioning: Env) -> None:
    key = provisioning.account()
    deployment_id = provisioning.create(key)
    assert provisioning.provision(deployment_id).status_code == 200
    ready = provisioning.wait_status(deployment_id, Status.READY)
    _seal_with_another_key(provisioning, deployment_id, key)

    assert provisioning.delete(deployment_id).status_code == 200  # ends: retrying cannot open them either

    provisioning.wait_status(deployment_id, Status.DELETED)
    last = provisioning.store.events(deployment_id)[-1]
    assert last["level"] == "error"
    assert "Runpod resources removed" not in last["message"]
    assert "could not be removed" in last["message"]
    assert ready.runpod.endpoint_id in last["message"]
    assert len(provisioning.runpod_state(key)["endpoints"]) == 1  # true: it is still there
    assert provisioning.store.secrets(deployment_id) is None


def test_a_delete_removes_the_deployments_invoke_keys(provisioning: Env) -> None:
    """Invoke keys die with their deployment: the cleanup deletes them, and only them (issue 18)."""
    key = provisioning.account()
    deployment_id = provisioning.create(key)
    db = firestore.Client(project=os.environ["GOOGLE_CLOUD_PROJECT"])
    keys = InvokeKeyStore(db)
    owner = provisioning.doc(deployment_id).owner
    secrets = [keys.create(deployment_id, owner, 20)[1] for _ in range(3)]
    other = uuid.uuid4().hex
    keys.create(other, owner, 20)
    provisioning.move(deployment_id, Status.DELETING)
    assert provisioning.delete(deployment_id).status_code == 200
    assert provisioning.doc(deployment_id).status == Status.DELETED.value
    assert keys.list(deployment_id) == []
    assert [keys.resolve(secret) for secret in secrets] == [None, None, None]
    assert len(keys.list(other)) == 1
    assert not db.collection(INVOKE_KEY_COUNTS).document(deployment_id).get().exists
    assert provisioning.delete(deployment_id).status_code == 200  # a repeat finds nothing to delete

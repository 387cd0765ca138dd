"""The store's guarantees against the real Firestore emulator: transitions, repeats, races, the bounded log."""

from __future__ import annotations

import concurrent.futures
import itertools
import uuid
from typing import Any

import pytest
from google.cloud import firestore

from shared.errors import DeploymentNotFoundError, IllegalTransitionError
from shared.lifecycle import Status, can_transition
from shared.store import DeploymentStore, NewDeployment, utcnow


def new_deployment(store: DeploymentStore) -> str:
    deployment_id = uuid.uuid4().hex
    now = utcnow()
    store.create(
        NewDeployment(
            document={
                "deployment_id": deployment_id,
                "owner": "t_test",
                "status": "validating",
                "created_at": now,
                "updated_at": now,
                "phase_timestamps": {"validating": now},
            },
            sealed_credentials=b"x",
            callback_nonce="n",
            callback_secret_hash="h",
        )
    )
    return deployment_id


@pytest.fixture
def store(db: firestore.Client) -> DeploymentStore:
    return DeploymentStore(db, event_log_max_lines=5)


def test_forward_transition_records_timestamp_and_log(store: DeploymentStore) -> None:
    dep = new_deployment(store)
    result = store.transition(dep, Status.SELECTING_GPU, "model checked", fields={"model_commit_sha": "a" * 40})
    assert result.changed and result.previous is Status.VALIDATING
    doc = store.get(dep)
    assert doc is not None
    assert doc["status"] == "selecting_gpu"
    assert doc["model_commit_sha"] == "a" * 40
    assert set(doc["phase_timestamps"]) == {"validating", "selecting_gpu"}
    assert [line["message"] for line in store.events(dep)] == ["deployment accepted", "model checked"]


def test_repeat_is_a_noop(store: DeploymentStore) -> None:
    dep = new_deployment(store)
    store.transition(dep, Status.SELECTING_GPU, "first")
    before = store.get(dep)
    again = store.transition(dep, Status.SELECTING_GPU, "duplicate delivery")
    assert not again.changed
    assert store.get(dep) == before
    assert len(store.events(dep)) == 2


def test_backwards_and_terminal_moves_refused(store: DeploymentStore) -> None:
    dep = new_deployment(store)
    store.transition(dep, Status.SELECTING_GPU, "a")
    with pytest.raises(IllegalTransitionError):
        store.transition(dep, Status.VALIDATING, "late event")
    store.transition(dep, Status.FAILED, "boom", fields={"error": {"code": "internal", "message": "x"}})
    with pytest.raises(IllegalTransitionError):
        store.transition(dep, Status.READY, "late ready")
    assert store.get(dep)["status"] == "failed"  # type: ignore[index]


def test_unknown_deployment(store: DeploymentStore) -> None:
    with pytest.raises(DeploymentNotFoundError):
        store.transition("missing-" + uuid.uuid4().hex, Status.FAILED, "x")


def test_concurrent_transitions_exactly_one_wins(store: DeploymentStore) -> None:
    """Racing 'ready' and 'failed' (and duplicates): one wins, the other is refused or a no-op, no lost write."""
    dep = new_deployment(store)
    for status in (Status.SELECTING_GPU, Status.CREATING_ENDPOINT, Status.LOADING_MODEL):
        store.transition(dep, status, status.value)
    targets = [Status.READY, Status.FAILED, Status.READY, Status.FAILED, Status.DELETING, Status.READY]

    def attempt(to: Status) -> Any:
        try:
            return store.transition(dep, to, f"race {to.value}").changed
        except IllegalTransitionError:
            return "refused"

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(targets)) as pool:
        outcomes = list(pool.map(attempt, targets))
    final = store.get(dep)["status"]  # type: ignore[index]
    raced = [
        Status(line["message"].removeprefix("race "))
        for line in store.events(dep)
        if line["message"].startswith("race ")
    ]
    # Every committed change wrote exactly one line, the changes form a legal path, and the last is the final status.
    assert len(raced) == outcomes.count(True) >= 1
    path = [Status.LOADING_MODEL, *raced]
    assert all(can_transition(a, b) for a, b in itertools.pairwise(path))
    assert raced[-1].value == final


def test_event_log_is_bounded(store: DeploymentStore) -> None:
    dep = new_deployment(store)
    for i in range(12):
        store.log(dep, f"line {i}")
    lines = [line["message"] for line in store.events(dep)]
    assert lines == [f"line {i}" for i in range(7, 12)]


def test_update_if_status_guards(store: DeploymentStore) -> None:
    dep = new_deployment(store)
    assert store.update_if_status(dep, [Status.DOWNLOADING_MODEL], {"progress": {"bytes_done": 1}}) is None
    for status in (Status.SELECTING_GPU, Status.CREATING_ENDPOINT, Status.DOWNLOADING_MODEL):
        store.transition(dep, status, status.value)
    updated = store.update_if_status(dep, [Status.DOWNLOADING_MODEL], {"progress.bytes_done": 5})
    assert updated is not None and updated["progress"]["bytes_done"] == 5
    assert store.get(dep)["progress"] == {"bytes_done": 5}  # type: ignore[index]


def test_secrets_erased(store: DeploymentStore) -> None:
    dep = new_deployment(store)
    assert store.secrets(dep) is not None
    store.erase_secrets(dep)
    store.erase_secrets(dep)
    assert store.secrets(dep) is None

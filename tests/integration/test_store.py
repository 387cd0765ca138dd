"""The store's guarantees against the real Firestore emulator: transitions, repeats, races, the bounded log, and the
typed document's forward and backward compatibility."""

from __future__ import annotations

import concurrent.futures
import itertools
import uuid
from typing import Any

import pytest
from google.cloud import firestore

from shared.creation import NewDeployment
from shared.deployments.transitions import Transitions
from shared.document import Deployment
from shared.errors import DeploymentNotFoundError, IllegalTransitionError
from shared.lifecycle import Status, can_transition
from shared.store import DEPLOYMENTS, DeploymentStore, utcnow


def new_deployment(store: DeploymentStore) -> str:
    deployment_id = uuid.uuid4().hex
    now = utcnow()
    store.create(
        NewDeployment(
            document=Deployment(
                deployment_id=deployment_id,
                owner="t_test",
                status=Status.VALIDATING,
                hf_model_id="org/model",
                created_at=now,
                updated_at=now,
                phase_timestamps={Status.VALIDATING: now},
            ),
            sealed_credentials=b"x",
            callback_nonce="n",
            callback_secret_hash="h",
        )
    )
    return deployment_id


@pytest.fixture
def store(db: firestore.Client) -> DeploymentStore:
    return DeploymentStore(db, event_log_max_lines=5)


@pytest.fixture
def transitions(store: DeploymentStore) -> Transitions:
    from shared.config import BackgroundSettings, get_settings
    from shared.wiring import core

    _, _, publisher, _, _ = core(get_settings(BackgroundSettings))
    return Transitions(store, publisher)


def test_forward_transition_records_timestamp_and_log(store: DeploymentStore, transitions: Transitions) -> None:
    dep = new_deployment(store)

    def pin(doc: Deployment) -> None:
        doc.model_commit_sha = "a" * 40

    result = transitions.move(dep, Status.SELECTING_GPU, "model checked", apply=pin)

    doc = store.get(dep)
    assert result.changed and result.previous is Status.VALIDATING
    assert doc is not None and doc.status is Status.SELECTING_GPU
    assert doc.model_commit_sha == "a" * 40
    assert Status.SELECTING_GPU in doc.phase_timestamps
    assert [line["message"] for line in store.events(dep)] == ["deployment accepted", "model checked"]


def test_repeat_is_a_noop(store: DeploymentStore, transitions: Transitions) -> None:
    dep = new_deployment(store)
    transitions.move(dep, Status.SELECTING_GPU, "first")
    before = store.get(dep)
    again = transitions.move(dep, Status.SELECTING_GPU, "duplicate delivery")
    assert not again.changed
    assert store.get(dep) == before
    assert len(store.events(dep)) == 2


def test_backwards_and_terminal_moves_refused(store: DeploymentStore, transitions: Transitions) -> None:
    dep = new_deployment(store)
    transitions.move(dep, Status.SELECTING_GPU, "a")
    with pytest.raises(IllegalTransitionError):
        transitions.move(dep, Status.VALIDATING, "late event")
    transitions.fail(dep, "internal", "boom")
    with pytest.raises(IllegalTransitionError):
        transitions.move(dep, Status.READY, "late ready")
    doc = store.get(dep)
    assert doc is not None and doc.status is Status.FAILED
    assert doc.error is not None and (doc.error.code, doc.error.message) == ("internal", "boom")


def test_the_first_failure_reason_wins(store: DeploymentStore, transitions: Transitions) -> None:
    dep = new_deployment(store)
    transitions.fail(dep, "timeout", "first")
    transitions.fail(dep, "no_capacity", "second")
    doc = store.get(dep)
    assert doc is not None and doc.error is not None and doc.error.code == "timeout"


def test_unknown_deployment(transitions: Transitions) -> None:
    with pytest.raises(DeploymentNotFoundError):
        transitions.move("missing-" + uuid.uuid4().hex, Status.FAILED, "x")


def test_concurrent_transitions_exactly_one_wins(store: DeploymentStore, transitions: Transitions) -> None:
    """Racing 'ready' and 'failed' (and duplicates): one wins, the other is refused or a no-op, no lost write."""
    dep = new_deployment(store)
    for status in (Status.SELECTING_GPU, Status.CREATING_ENDPOINT, Status.LOADING_MODEL):
        transitions.move(dep, status, status.value)
    targets = [Status.READY, Status.FAILED, Status.READY, Status.FAILED, Status.DELETING, Status.READY]

    def attempt(to: Status) -> Any:
        try:
            return transitions.move(dep, to, f"race {to.value}").changed
        except IllegalTransitionError:
            return "refused"

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(targets)) as pool:
        outcomes = list(pool.map(attempt, targets))
    final = store.get(dep)
    raced = [
        Status(line["message"].removeprefix("race "))
        for line in store.events(dep)
        if line["message"].startswith("race ")
    ]
    # Every committed change wrote exactly one line, the changes form a legal path, and the last is the final status.
    assert len(raced) == outcomes.count(True) >= 1
    path = [Status.LOADING_MODEL, *raced]
    assert all(can_transition(a, b) for a, b in itertools.pairwise(path))
    assert final is not None and raced[-1] is final.status


def test_event_log_is_bounded(store: DeploymentStore) -> None:
    dep = new_deployment(store)
    for i in range(8):
        store.log(dep, f"line {i}")
    lines = [line["message"] for line in store.events(dep)]
    assert lines == [f"line {i}" for i in range(3, 8)]


def test_an_update_that_declines_writes_nothing(store: DeploymentStore) -> None:
    dep = new_deployment(store)
    before = store.get(dep)
    assert store.update(dep, lambda doc: False, message="never") is None
    assert store.get(dep) == before
    assert len(store.events(dep)) == 1


def test_a_field_a_newer_release_wrote_survives_this_releases_write(
    store: DeploymentStore, db: firestore.Client
) -> None:
    dep = new_deployment(store)
    ref = db.collection(DEPLOYMENTS).document(dep)
    ref.update({"future_field": {"kept": True}})

    def note(d: Deployment) -> bool:
        d.worker_last_report_at = utcnow()
        return True

    store.update(dep, note)
    assert (ref.get().to_dict() or {})["future_field"] == {"kept": True}


def test_secrets_erased(store: DeploymentStore) -> None:
    dep = new_deployment(store)
    assert store.secrets(dep) is not None
    store.erase_secrets(dep)
    store.erase_secrets(dep)
    assert store.secrets(dep) is None

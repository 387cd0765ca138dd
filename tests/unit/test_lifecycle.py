"""The state machine, exhaustively: every (from, to) pair is either allowed or refused on purpose."""

import itertools

import pytest

from shared.lifecycle import PROVISIONING, TERMINAL, Status, allowed_targets, can_transition

ALLOWED = {
    (Status.VALIDATING, Status.SELECTING_GPU),
    (Status.SELECTING_GPU, Status.CREATING_ENDPOINT),
    (Status.CREATING_ENDPOINT, Status.DOWNLOADING_MODEL),
    (Status.CREATING_ENDPOINT, Status.LOADING_MODEL),
    (Status.CREATING_ENDPOINT, Status.READY),
    (Status.DOWNLOADING_MODEL, Status.LOADING_MODEL),
    (Status.DOWNLOADING_MODEL, Status.READY),
    (Status.LOADING_MODEL, Status.READY),
    (Status.READY, Status.STOPPED),
    (Status.STOPPED, Status.DOWNLOADING_MODEL),
    (Status.DELETING, Status.DELETED),
}
ALLOWED |= {(s, Status.FAILED) for s in Status if s not in TERMINAL and s is not Status.DELETING}
ALLOWED |= {(s, Status.DELETING) for s in Status if s not in (Status.DELETED, Status.DELETING)}


@pytest.mark.parametrize(("current", "requested"), list(itertools.product(Status, Status)))
def test_every_pair(current: Status, requested: Status) -> None:
    assert can_transition(current, requested) == ((current, requested) in ALLOWED)


def test_deleted_is_final() -> None:
    assert allowed_targets(Status.DELETED) == frozenset()


def test_failed_only_moves_to_deleting() -> None:
    assert allowed_targets(Status.FAILED) == {Status.DELETING}


def test_worker_phases_never_move_back() -> None:
    assert not can_transition(Status.READY, Status.LOADING_MODEL)
    assert not can_transition(Status.LOADING_MODEL, Status.DOWNLOADING_MODEL)


def test_provisioning_statuses_can_fail() -> None:
    assert all(can_transition(s, Status.FAILED) for s in PROVISIONING)

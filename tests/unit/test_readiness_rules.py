"""The readiness watchdog's rules: what the workers of a silent deployment say, which pools come next, and when
the next check runs."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.config import Settings
from shared.deployments.readiness import Action, Verdict, judge, next_check_delay, next_window
from shared.lifecycle import FailureReason
from shared.runpod.client import EndpointWorkers
from tests.unit.factories import T0, settings

SWITCH_AFTER_S = 90.0


def _workers(**summary: int) -> EndpointWorkers:
    """``GET /v2/serverless/{id}/workers`` with this summary."""
    return EndpointWorkers.model_validate({"workers": [], "summary": {**summary, "total": sum(summary.values())}})


def _judge(workers: EndpointWorkers, *, reported: bool = False, throttled_for_s: float | None = None) -> Verdict:
    since = None if throttled_for_s is None else T0 - timedelta(seconds=throttled_for_s)
    return judge(workers, reported=reported, throttled_since=since, now=T0, switch_after_s=SWITCH_AFTER_S)


# --- judge --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("summary", [{"running": 1}, {"idle": 1}, {"initializing": 2}])
def test_workers_starting_or_up_mean_wait(summary: dict[str, int]) -> None:
    verdict = _judge(_workers(**summary), throttled_for_s=500)

    assert verdict.action is Action.WAIT
    assert verdict.reason is None
    assert verdict.throttled_since is None  # the throttled clock stops once a worker is up


def test_a_worker_up_outweighs_unhealthy_and_throttled_ones() -> None:
    verdict = _judge(_workers(initializing=1, unhealthy=2, throttled=1), throttled_for_s=500)

    assert verdict.action is Action.WAIT


@pytest.mark.parametrize(
    ("reported", "reason"),
    [(True, FailureReason.MODEL_LOAD_FAILED), (False, FailureReason.IMAGE_PULL_FAILED)],
)
def test_only_unhealthy_workers_fail_at_once(reported: bool, reason: FailureReason) -> None:
    verdict = _judge(_workers(unhealthy=1, throttled=1), reported=reported)

    assert verdict.action is Action.FAIL
    assert verdict.reason is reason
    assert "logs" in verdict.note


def test_throttled_for_less_than_the_switch_time_waits_and_keeps_its_start() -> None:
    verdict = _judge(_workers(throttled=1), throttled_for_s=SWITCH_AFTER_S - 1)

    assert verdict.action is Action.WAIT
    assert verdict.throttled_since == T0 - timedelta(seconds=SWITCH_AFTER_S - 1)


def test_newly_throttled_workers_start_the_clock_now() -> None:
    verdict = _judge(_workers(throttled=2))

    assert verdict.action is Action.WAIT
    assert verdict.throttled_since == T0
    assert "2 worker(s) throttled" in verdict.note


@pytest.mark.parametrize("throttled_for_s", [SWITCH_AFTER_S, SWITCH_AFTER_S + 600])
def test_throttled_for_the_switch_time_switches_pools(throttled_for_s: float) -> None:
    verdict = _judge(_workers(throttled=1), throttled_for_s=throttled_for_s)

    assert verdict.action is Action.SWITCH_POOLS
    assert verdict.throttled_since == T0 - timedelta(seconds=throttled_for_s)
    assert verdict.reason is None


def test_no_worker_at_all_means_wait_and_forgets_the_throttled_clock() -> None:
    verdict = _judge(_workers(), throttled_for_s=500)

    assert verdict.action is Action.WAIT
    assert verdict.throttled_since is None
    assert verdict.note == "no worker yet"


# --- next_window --------------------------------------------------------------------------------------------------

RANKED = ["A", "B", "C", "D", "E"]


@pytest.mark.parametrize(
    ("window", "size", "expected"),
    [
        (["A", "B"], 2, ["C", "D"]),  # from the middle
        (["C", "D"], 2, ["E"]),  # what is left at the end
        (["E"], 2, []),  # every pool tried
        (["A", "B", "C"], 3, ["D", "E"]),
        (["B"], 1, ["C"]),
        (["GONE"], 2, []),  # a window whose last pool is not ranked: nothing is known to come after it
        ([], 2, []),
    ],
)
def test_the_next_window_follows_the_current_one_in_the_ranking(
    window: list[str], size: int, expected: list[str]
) -> None:
    assert next_window(RANKED, window, size) == expected


# --- next_check_delay ---------------------------------------------------------------------------------------------


def _timing(**overrides: float) -> Settings:
    values = {
        "readiness_first_check_s": 20.0,
        "readiness_backoff_factor": 1.5,
        "readiness_max_interval_s": 60.0,
        "readiness_deadline_s": 900.0,
    }
    return settings(**(values | overrides))


def test_checks_back_off_up_to_the_longest_interval() -> None:
    timing = _timing()

    delays = [next_check_delay(timing, check, waited_s=0) for check in range(6)]

    assert delays[:3] == [pytest.approx(30.0), pytest.approx(45.0), 60.0]
    assert delays[3:] == [60.0, 60.0, 60.0]
    assert delays == sorted(delays)


def test_a_check_never_lands_past_the_deadline() -> None:
    timing = _timing()

    assert next_check_delay(timing, 10, waited_s=880) == pytest.approx(21.0)  # lands just past it, and fails there
    assert next_check_delay(timing, 10, waited_s=950) == 0.0
    for waited in range(0, 1000, 37):
        delay = next_check_delay(timing, 5, waited_s=waited)
        assert delay >= 0
        assert waited + delay <= timing.readiness_deadline_s + 1 or delay == 0


def test_the_backoff_follows_the_settings() -> None:
    timing = _timing(readiness_first_check_s=10, readiness_backoff_factor=2, readiness_max_interval_s=35)

    assert [next_check_delay(timing, check, waited_s=0) for check in range(3)] == [20.0, 35.0, 35.0]

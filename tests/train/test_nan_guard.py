"""`NaNGuard`, the decision half of the NaN guard (the loop's actions are tested in test_train.py)."""

from __future__ import annotations

import pytest

from liverctl.train.nan_guard import ABORT, OK, ROLLBACK, SKIP, NaNGuard


def test_skips_until_the_limit_then_asks_for_a_rollback():
    guard = NaNGuard(skip_limit=3, max_rollbacks=5)
    assert [guard.non_finite_step() for _ in range(3)] == [SKIP, SKIP, ROLLBACK]
    assert guard.counts() == {"skipped": 3, "rollbacks": 1}
    # the rollback starts a new count: three more in a row are needed for the next one
    assert [guard.non_finite_step() for _ in range(3)] == [SKIP, SKIP, ROLLBACK]
    assert guard.counts() == {"skipped": 6, "rollbacks": 2}


def test_a_finite_step_resets_the_consecutive_count_but_not_the_total():
    guard = NaNGuard(skip_limit=2, max_rollbacks=1)
    for _ in range(5):  # never two in a row: never a rollback
        assert guard.non_finite_step() == SKIP
        assert guard.finite_step() == OK
    assert guard.counts() == {"skipped": 5, "rollbacks": 0}
    assert guard.state_dict()["consecutive"] == 0


def test_the_rollback_after_max_rollbacks_is_an_abort():
    guard = NaNGuard(skip_limit=1, max_rollbacks=2)
    assert [guard.non_finite_step() for _ in range(3)] == [ROLLBACK, ROLLBACK, ABORT]
    assert guard.counts() == {"skipped": 3, "rollbacks": 3}


def test_a_validation_rollback_counts_toward_the_abort():
    guard = NaNGuard(skip_limit=3, max_rollbacks=1)
    assert guard.non_finite_step() == SKIP
    assert guard.request_rollback() == ROLLBACK  # a non-finite validation
    assert guard.state_dict() == {"skipped": 1, "consecutive": 0, "rollbacks": 1}
    assert guard.request_rollback() == ABORT


@pytest.mark.parametrize("limit", [0, 1])
def test_a_skip_limit_below_two_rolls_back_at_once(limit):
    guard = NaNGuard(skip_limit=limit, max_rollbacks=3)
    assert guard.non_finite_step() == ROLLBACK


def test_max_rollbacks_zero_aborts_at_the_first_rollback():
    assert NaNGuard(skip_limit=1, max_rollbacks=0).non_finite_step() == ABORT


def test_state_survives_a_resume():
    guard = NaNGuard(skip_limit=3, max_rollbacks=2)
    for action in (guard.non_finite_step, guard.non_finite_step, guard.non_finite_step, guard.non_finite_step):
        action()
    state = guard.state_dict()
    assert state == {"skipped": 4, "consecutive": 1, "rollbacks": 1}
    resumed = NaNGuard(skip_limit=3, max_rollbacks=2)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    # the resumed guard continues the same count: two more in a row make the second rollback
    assert [resumed.non_finite_step(), resumed.non_finite_step()] == [SKIP, ROLLBACK]
    fresh = NaNGuard()
    fresh.load_state_dict({})  # a checkpoint from before the guard saved its state
    assert fresh.state_dict() == {"skipped": 0, "consecutive": 0, "rollbacks": 0}

"""`liverctl.runs.history`: the one reducer of events.jsonl and its rules for the best epoch and the status."""

from __future__ import annotations

import json

import pytest

from liverctl.runs.history import RunHistory, best_figures, read_history, run_status


def _epoch(epoch, dice, **extra):
    return {"v": 1, "ts": 100.0 + epoch, "kind": "epoch_end", "epoch": epoch, "volume_dice": dice,
            "slice_dice": dice, "global_dice": dice, **extra}


def _fold(*events) -> RunHistory:
    history = RunHistory()
    for e in events:
        history.add(e)
    return history


def test_best_is_the_last_epoch_marked_best():
    h = _fold(_epoch(1, 0.8, is_best=True), _epoch(2, 0.9, is_best=True), _epoch(3, 0.95, is_best=False))
    # 0.95 is higher, but the trainer did not save it as best (e.g. written again after a rollback):
    # best.pt holds epoch 2, so epoch 2 is the best
    assert best_figures(h) == (2, {"volume_dice": 0.9, "slice_dice": 0.9, "global_dice": 0.9})


def test_a_non_finite_epoch_is_never_best():
    h = _fold(_epoch(1, 0.8, is_best=True), _epoch(2, None, is_best=False))
    assert h.best["epoch"] == 1
    assert _fold(_epoch(1, None, is_best=False)).best is None


def test_without_is_best_the_first_highest_finite_dice_is_best():
    h = _fold(_epoch(1, 0.8), _epoch(2, 0.9), _epoch(3, float("nan")), _epoch(4, 0.9))
    assert h.best["epoch"] == 2


@pytest.mark.parametrize(("events", "writer", "want"), [
    ([{"kind": "run_start"}, {"kind": "run_end", "status": "completed"}], False, "completed"),
    ([{"kind": "run_start"}, {"kind": "run_end", "status": "completed"}], True, "completed"),  # ending now
    ([{"kind": "run_start"}], True, "running"),
    ([{"kind": "run_start"}], False, "interrupted"),
    ([{"kind": "run_start"}], None, "running"),  # events without their folder: nothing says it ended
    ([{"kind": "run_start"}, {"kind": "run_end", "status": "time_limit"}, {"kind": "run_start"}], False,
     "interrupted"),  # the resumed segment has no run_end of its own
    ([], False, "unknown"),
    # a hand-made run_end: a table was shown as "{'x': 1}" by runs and watch
    ([{"kind": "run_start"}, {"kind": "run_end", "status": {"x": 1}}], False, "unknown"),
    ([{"kind": "run_start"}, {"kind": "run_end", "status": ["failed"]}], False, "unknown"),
    ([{"kind": "run_start"}, {"kind": "run_end", "status": 7}], False, "unknown"),
])
def test_status_rule(events, writer, want):
    assert run_status(_fold(*events), writer) == want


def test_a_schema_version_that_is_a_list_or_a_table_is_an_unknown_version(tmp_path):
    """`"v": [1]` on an event line was 'TypeError: unhashable type' in `watch` (every line folded) and made
    `runs` show the run as 'could not be read' (scripts/fuzz_readers.py events)."""
    from liverctl.runs.history import schema_version

    problems: list[str] = []
    h = _fold({"kind": "run_start", "v": 1}, {"kind": "step", "v": [100000]}, {"kind": "note", "v": {"a": 1}})
    assert schema_version(h, problems) is None
    assert problems == ["events with an unknown schema version ['a dict', 'a list']"]
    path = tmp_path / "events.jsonl"
    path.write_text('{"kind": "run_start", "v": 1}\n{"kind": "run_end", "v": [1], "status": "completed"}\n')
    assert run_status(read_history(path, problems), False) == "completed"


def test_read_history_skips_steps_but_keeps_their_time_and_sums_segments(tmp_path):
    lines = [
        {"v": 1, "ts": 0.0, "kind": "run_start"},
        {"v": 1, "ts": 50.0, "kind": "step", "step": 1},
        {"v": 1, "ts": 60.0, "kind": "run_end", "status": "interrupted"},
        {"v": 1, "ts": 1000.0, "kind": "run_start"},  # resumed much later: the gap is not wall time
        {"v": 1, "ts": 1030.0, "kind": "step", "step": 2},
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in lines) + '{"v": 1, "ts": 10')
    problems: list[str] = []
    h = read_history(path, problems)
    assert h.wall_seconds == pytest.approx(60 + 30)
    assert h.last_ts == 1030.0 and h.run_end is None and h.torn_last_line
    assert run_status(h, False) == "interrupted"
    assert read_history(tmp_path / "absent.jsonl", problems).exists is False and "no events.jsonl" in problems

"""`liverctl watch`: the state folded from events, the headless app, and `--once` (hand-written logs)."""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner
from watch_fixtures import EventScript, event_line, realistic_run

from liverctl.cli import app as cli_app
from liverctl.errors import LiverctlError
from liverctl.runs.events import EventWriter, read_events
from liverctl.runs.folder import RunLock
from liverctl.watch import summary as summary_text
from liverctl.watch.app import make_watch_app
from liverctl.watch.charts import (
    ChartSettings,
    ChartSpec,
    all_charts,
    dice_chart,
    ema,
    envelope,
    loss_chart,
    lr_chart,
    nice_ticks,
    render_text,
    throughput_chart,
)
from liverctl.watch.locate import find_run
from liverctl.watch.records import StepSample
from liverctl.watch.state import RunState
from liverctl.watch.summary import exit_code, fmt_duration, nan_banner_text
from liverctl.watch.watcher import RunWatcher, plain_step_line
from liverctl.watch.widgets import Chart, CompareTable, EpochTable, NanBanner, RunHeader

POLL_S = 0.05


class FakeClock:
    def __init__(self, t: float = 1_700_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def append(path: Path, *lines: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(lines))


def two_epoch_run(name: str = "r1") -> EventScript:
    s = EventScript(name)
    s.start(preset="v3", device="cpu", amp="off", epochs=3)
    s.add("step", after=5, step=0, epoch=0, loss=0.9, lr=1e-4, samples_per_s=12.5)
    s.add("step", after=5, step=10, epoch=0, loss=0.7, lr=1e-4, samples_per_s=13.0)
    s.epoch(0, seconds=60, volume_dice=0.80, is_best=True)
    s.add("checkpoint", epoch=0, path="checkpoints/best.pt", which="best", volume_dice=0.80)
    s.epoch(1, seconds=60, volume_dice=0.85, is_best=True)
    return s


# ---- RunState: pure folding ----------------------------------------------------------------------------


def test_steps_done_again_after_a_resume_are_one_point_each():
    """A run killed between checkpoints resumes from the last one and redoes the steps since: the chart
    shows each step's last loss once (the zig-zag of both attempts before)."""
    s = EventScript("r")
    s.start(epochs=2)
    for step, loss in ((5, 0.9), (10, 0.8), (15, 0.7)):
        s.add("step", step=step, loss=loss)
    s.add("run_start", after=60, config={"train": {"epochs": 2}}, step=10)
    for step, loss in ((15, 0.65), (20, 0.6)):
        s.add("step", step=step, loss=loss)
    state = RunState(clock=FakeClock(s.t + 1))
    state.feed(json.loads(line) for line in s.lines)
    assert state.loss_points() == [0.9, 0.8, 0.65, 0.6]  # was [0.9, 0.8, 0.7, 0.65, 0.6]


def test_an_epoch_of_fewer_steps_than_log_every_still_has_a_rate():
    """A tiny dataset (2 steps an epoch, train.log_every 5) writes no step event: the header said "— samples/s"
    for the whole run. epoch_end carries the epoch's rate, and the header shows it; a later step event's rate
    is the newer figure."""
    s = EventScript("tiny")
    s.start(epochs=2, steps_per_epoch=2)
    s.epoch(1, seconds=11.0, epochs=2, samples_per_s=3.2)
    state = RunState(clock=FakeClock(s.t + 1))
    state.feed(json.loads(line) for line in s.lines)
    assert state.samples_per_s == 3.2
    assert "3.2 samples/s" in summary_text.header_text(state).plain
    s.add("step", after=5, step=3, epoch=1, loss=0.5, lr=1e-4, samples_per_s=4.5)
    state.feed([json.loads(s.lines[-1])])
    assert "4.5 samples/s" in summary_text.header_text(state).plain


def test_state_follows_a_healthy_run_to_completion():
    s = two_epoch_run()
    clock = FakeClock(s.t + 1)
    state = RunState(clock=clock)
    state.feed(json.loads(line) for line in s.lines)
    assert (state.name, state.preset, state.device, state.amp) == ("r1", "v3", "cpu", "off")
    assert state.status == "running"
    assert [r.epoch for r in state.rows] == [0, 1]
    assert state.best == (1, 0.85)
    assert [r.is_best for r in state.rows] == [False, True]  # only the latest best keeps its star
    assert state.samples_per_s == 13.0
    assert state.loss_points() == [0.9, 0.7]
    assert len(state.checkpoints) == 1
    assert not state.has_nan

    s.epoch(2, seconds=60, volume_dice=0.84)
    s.add("run_end", status="completed", best={"epoch": 1, "volume_dice": 0.85})
    state.feed(json.loads(line) for line in s.lines[-2:])
    assert state.status == "completed"
    assert exit_code(state) == 0


@pytest.mark.parametrize("status", ["failed", "nan_abort", "interrupted", "time_limit"])
def test_state_takes_the_run_end_status(status):
    s = two_epoch_run()
    s.add("run_end", status=status, best=None, message="stopped")
    state = RunState(clock=FakeClock(s.t))
    state.feed(json.loads(line) for line in s.lines)
    assert state.status == status
    assert exit_code(state) == (1 if status in ("failed", "nan_abort") else 0)


def test_best_and_its_star_follow_the_shared_rule():
    s = EventScript("r")
    s.start(epochs=3)
    for epoch, dice in ((1, 0.8), (2, 0.9), (3, 0.85)):  # no is_best field: the first highest Dice
        s.add("epoch_end", after=60, epoch=epoch, volume_dice=dice, seconds=60.0, epochs=3)
    state = RunState()
    state.feed(json.loads(line) for line in s.lines)
    assert state.best == (2, 0.9)
    assert [r.epoch for r in state.rows if r.is_best] == [2]


def test_a_dice_outside_0_1_in_a_log_is_shown_as_no_figure():
    """`runs` and `report` take a logged Dice of 7 (an edited or damaged log) for no figure; watch showed it as
    7.0000 in its epoch row and checkpoint list."""
    s = EventScript("r")
    s.start(epochs=2)
    s.add("epoch_end", after=60, epoch=1, volume_dice=7.0, slice_dice=-1.0, global_dice=0.5, seconds=60.0, epochs=2)
    s.add("checkpoint", epoch=1, path="checkpoints/last.pt", which="last", volume_dice=1e308)
    state = RunState()
    state.feed(json.loads(line) for line in s.lines)
    (row,) = state.rows
    assert (row.volume_dice, row.slice_dice, row.global_dice) == (None, None, 0.5)
    assert state.checkpoints[0].volume_dice is None and state.best is None


def test_a_run_nobody_writes_has_no_eta_and_its_clock_stops(tmp_path):
    s = two_epoch_run()
    s.write(tmp_path / "r" / "events.jsonl")
    watcher = RunWatcher(tmp_path / "r", clock=FakeClock(s.t + 10_000))
    watcher.poll()
    assert watcher.state.status == "interrupted" and not watcher.state.stalled
    assert watcher.state.eta_s() is None
    assert watcher.state.elapsed_s() == pytest.approx(s.t - 1_700_000_000.0)
    with RunLock(tmp_path / "r"):
        watcher.poll()
        assert watcher.state.status == "running" and watcher.state.stalled and watcher.state.eta_s() is not None


def test_stalled_after_three_usual_epochs_of_silence():
    s = two_epoch_run()  # epochs of 60 s: stalled after max(120 s, 3 x 60 s) = 180 s
    clock = FakeClock(s.t + 100)
    state = RunState(clock=clock)
    state.feed(json.loads(line) for line in s.lines)
    assert state.shown_status == "running"
    clock.t = s.t + 200
    assert state.shown_status == "stalled" and state.stalled
    assert state.status == "running"  # a live hint on screen only: the run's status is the shared rule's
    s.add("step", after=200, step=20, epoch=2, loss=0.5)  # the run speaks again
    state.feed([json.loads(s.lines[-1])])
    assert state.shown_status == "running"


def test_stalled_before_the_first_epoch_uses_step_gaps_with_a_floor():
    s = EventScript("r")
    s.start()
    for k in range(4):
        s.add("step", after=10, step=k, epoch=0, loss=1.0)
    clock = FakeClock(s.t + 250)
    state = RunState(clock=clock)
    state.feed(json.loads(line) for line in s.lines)
    assert state.shown_status == "running"  # 3 x 10 s is far below the 300 s floor
    clock.t = s.t + 400
    assert state.shown_status == "stalled"


def test_eta_counts_epochs_left_less_the_current_epoch():
    s = EventScript("r")
    s.start(epochs=4)
    s.epoch(0, seconds=100, epochs=4)
    clock = FakeClock(s.t + 30)
    state = RunState(clock=clock)
    state.feed(json.loads(line) for line in s.lines)
    assert state.eta_s() == pytest.approx(3 * 100 - 30)


def resumed_run(stopped_s: float) -> EventScript:
    """Two hour-long epochs of ten, killed, resumed `stopped_s` later (no step of the new segment yet)."""
    s = EventScript("r")
    s.start(epochs=10, steps_per_epoch=100)
    for epoch in (1, 2):
        s.add("step", after=1800, epoch=epoch - 1, step=epoch * 100 - 50, loss=0.3, samples_per_s=40.0)
        s.epoch(epoch, seconds=3600.0, after=1800, epochs=10)
    s.add("run_start", after=stopped_s, config={"train": {"epochs": 10}}, steps_per_epoch=100, epoch=2, step=200,
          resumed_from={"epoch": 2, "global_step": 200, "step_in_epoch": 0})
    return s


def test_a_resumed_run_counts_neither_eta_nor_elapsed_over_the_time_it_lay_stopped():
    s = resumed_run(stopped_s=24 * 3600)
    state = RunState(clock=FakeClock(s.t + 60))
    state.feed(json.loads(line) for line in s.lines)
    assert state.status == "running"
    assert state.eta_s() == pytest.approx(8 * 3600 - 60)  # was 7 h: the day stopped counted as the epoch's progress
    assert state.elapsed_s() == pytest.approx(2 * 3600 + 60)  # was 26 h
    assert state.elapsed_s() == pytest.approx(state.history.wall_seconds_at(s.t + 60))  # as `liverctl runs` sums it
    assert state.samples_per_s is None  # the last segment's rate is no measure of this process
    s.add("step", after=600, epoch=2, step=210, loss=0.3, samples_per_s=55.0)
    state.feed([json.loads(s.lines[-1])])
    assert state.samples_per_s == 55.0


def test_eta_from_steps_before_any_epoch_uses_only_the_last_segment():
    s = EventScript("r")
    s.start(epochs=1, steps_per_epoch=100)
    s.add("step", after=10, epoch=0, step=10, loss=0.5)
    s.add("step", after=10, epoch=0, step=20, loss=0.5)
    s.add("run_start", after=5000, config={"train": {"epochs": 1}}, steps_per_epoch=100, epoch=0, step=20)
    s.add("step", after=10, epoch=0, step=30, loss=0.5)
    s.add("step", after=10, epoch=0, step=40, loss=0.5)
    state = RunState(clock=FakeClock(s.t))
    state.feed(json.loads(line) for line in s.lines)
    assert state.eta_s() == pytest.approx(60 * 1.0)  # 60 steps left at 1 s a step, not at the rate across the gap


def test_null_value_becomes_one_nan_record_with_the_writer_report():
    s = two_epoch_run()
    s.epoch(2, seconds=60, val_loss=None, volume_dice=None)
    s.add("nan", epoch=2, where="epoch_end:val_loss,volume_dice", action="report", message="non-finite")
    state = RunState(clock=FakeClock(s.t))
    state.feed(json.loads(line) for line in s.lines[:-1])
    assert state.has_nan and state.nans[0].from_value
    assert state.rows[-1].nan_fields == {"val_loss", "volume_dice"}
    assert state.dice_points("volume_dice")[-1] is None
    state.feed([json.loads(s.lines[-1])])
    assert len(state.nans) == 1 and not state.nans[0].from_value
    assert exit_code(state) == 1


def test_nan_token_and_guard_events_mark_steps():
    s = EventScript("r")
    s.start()
    s.add("step", after=1, step=1, epoch=0, loss=0.5)
    state = RunState(clock=FakeClock(s.t))
    state.feed(json.loads(line) for line in s.lines)
    # Python's json reads the bare NaN token: a writer without the null convention is still caught.
    state.feed([json.loads('{"v":1,"ts":1,"seq":9,"run":"r","kind":"step","epoch":0,"step":2,"loss":NaN}')])
    state.feed([{"kind": "nan", "epoch": 0, "step": 3, "where": "grad", "action": "skip_step",
                 "counts": {"skipped": 1, "rollbacks": 0}}])
    assert state.loss_points() == [0.5, None, None]
    assert [r.action for r in state.nans] == ["report", "skip_step"]
    assert state.guard_counts() == {"skipped": 1, "rollbacks": 0}
    assert "skip_step" in nan_banner_text(state)


def test_trainer_order_through_the_event_writer_gives_one_record_per_incident(tmp_path):
    # As liverctl/train/loop.py writes them: steps carry the epoch in progress, epoch_end the epochs done;
    # a skipped step writes the guard's `nan` first, then (at a log step) the step with a NaN loss, which
    # the writer turns into null plus its own report.
    nan = float("nan")
    with EventWriter(tmp_path, "t") as log:
        log.emit("run_start", epoch=0, step=0, config={"train": {"epochs": 2}}, preset="demo", device="cpu",
                 amp="off", resumed_from=None, steps_per_epoch=4)
        log.emit("step", epoch=0, step=2, loss=0.8, lr=1e-3, samples_per_s=5.0, grad_norm=1.0)
        log.emit("nan", epoch=0, step=4, where="loss", action="skip_step", counts={"skipped": 1, "rollbacks": 0},
                 loss=nan, grad_norm=None, message="non-finite loss at step 3")
        log.emit("step", epoch=0, step=4, loss=nan, lr=1e-3, samples_per_s=5.0, grad_norm=None)
        log.emit("nan", epoch=1, step=4, where="validation", action="rollback",
                 counts={"skipped": 1, "rollbacks": 1}, loss=nan, grad_norm=None, message="rolled back")
        log.emit("epoch_end", epoch=1, step=4, train_loss=0.8, val_loss=nan, volume_dice=0.1, slice_dice=0.5,
                 global_dice=0.2, seconds=10.0, is_best=False, epochs=2)
        log.emit("step", epoch=1, step=6, loss=0.7, lr=1e-3, samples_per_s=5.0, grad_norm=1.0)
    state = RunState(clock=FakeClock(1e12))
    state.feed(read_events(tmp_path / "events.jsonl"))
    # The writer's reports of the step's and the epoch's nulls fold into the guard's own events.
    assert [(r.where, r.action) for r in state.nans] == [("loss", "skip_step"), ("validation", "rollback")]
    assert state.loss_points() == [0.8, None, 0.7]  # the validation NaN is not a training step
    row = state.rows[0]
    assert row.epoch == 1 and row.nan_seen and row.nan_fields == {"val_loss"}
    assert state.steps_per_epoch == 4 and state.step_in_epoch() == 2


def test_unfinished_epoch_collects_step_losses_and_nans():
    s = two_epoch_run()
    s.add("step", after=5, step=20, epoch=2, loss=0.4)
    s.add("step", after=5, step=30, epoch=2, loss=0.2)
    clock = FakeClock(s.t)
    state = RunState(clock=clock)
    state.feed(json.loads(line) for line in s.lines)
    current = state.current_epoch()
    assert current.number == 2 and current.mean_loss == pytest.approx(0.3) and current.n_nan == 0
    state.feed([{"kind": "nan", "epoch": 2, "step": 31, "where": "loss", "action": "skip_step", "ts": s.t}])
    assert state.current_epoch().n_nan == 1
    state.feed([json.loads(s.epoch(2, seconds=60))])
    assert state.current_epoch() is None and state.rows[-1].nan_seen


def test_unknown_kinds_are_counted_not_fatal():
    clock = FakeClock()
    state = RunState(clock=clock)
    state.feed([{"kind": "telemetry", "ts": clock.t}, {"kind": "telemetry"}, {"no_kind": True}])
    assert state.unknown_kinds == {"telemetry": 2, "None": 1}
    assert state.status == "running"


# ---- RunWatcher: the file under the state -------------------------------------------------------------


def test_watcher_waits_for_the_file_and_holds_back_a_torn_line(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    watcher = RunWatcher(run)
    assert watcher.poll() == 0 and watcher.condition == "waiting"
    assert "waiting for" in watcher.notice
    s = two_epoch_run()
    last = s.lines[-1]
    append(run / "events.jsonl", *s.lines[:-1], last[:20])
    watcher.poll()
    assert watcher.condition == "ok" and len(watcher.state.rows) == 1
    append(run / "events.jsonl", last[20:])
    assert watcher.poll() == 1
    assert len(watcher.state.rows) == 2


def test_an_empty_log_nobody_writes_is_a_run_that_ended_before_its_first_event(tmp_path):
    """The trainer takes the run's lock, then creates events.jsonl; a full disk before the first event leaves
    it empty. While the lock is held that is a run starting; once it is not, the run failed."""
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "events.jsonl").write_bytes(b"")
    watcher = RunWatcher(run)
    with RunLock(run):
        watcher.poll()
        assert watcher.state.status == "waiting" and watcher.notice is None
    watcher.poll()
    assert watcher.state.status == "unknown" and "ended before its first event" in watcher.notice  # as `runs` says
    result = CliRunner().invoke(cli_app, ["watch", "r", "--once", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1 and "ended before its first event" in " ".join(result.output.split())


def test_watcher_survives_the_folder_deleted_and_a_replaced_file(tmp_path):
    run = tmp_path / "r"
    s = two_epoch_run()
    s.write(run / "events.jsonl")
    watcher = RunWatcher(run)
    watcher.poll()
    shutil.rmtree(run)
    assert watcher.poll() == 0
    assert watcher.condition == "deleted" and "run folder deleted" in watcher.notice
    assert len(watcher.state.rows) == 2  # the last state stays on screen
    fresh = EventScript("r")
    fresh.start()
    fresh.write(run / "events.jsonl")
    watcher.poll()
    assert watcher.condition == "ok" and watcher.state.rows == []  # a new log, a fresh state


def test_watcher_starts_a_fresh_state_for_a_log_truncated_and_rewritten_larger(tmp_path, monkeypatch):
    run = tmp_path / "r"
    two_epoch_run("r").write(run / "events.jsonl")
    watcher = RunWatcher(run)
    watcher.poll()
    assert len(watcher.state.rows) == 2
    fresh = EventScript("r", t0=2e9)
    fresh.start(preset="v5", epochs=9)
    for epoch in range(1, 6):
        fresh.epoch(epoch, volume_dice=0.5 + epoch / 100)
    with open(run / "events.jsonl", "r+") as fh:  # in place, the same inode, and larger than before
        fh.truncate(0)
        fh.write("".join(fresh.lines))
    monkeypatch.setattr("liverctl.watch.watcher.BACKGROUND_READ_BYTES", 100)
    assert watcher.read_is_long()  # were it long, it would be read again off the UI thread
    monkeypatch.undo()
    watcher.poll()
    assert [r.volume_dice for r in watcher.state.rows] == [0.51, 0.52, 0.53, 0.54, 0.55]
    assert watcher.state.preset == "v5"


def test_plain_step_lines_are_only_step_events_that_cannot_hold_a_non_finite_value():
    step = dict(epoch=0, step=5, loss=0.25, lr=1e-05, samples_per_s=44.1, grad_norm=1.5)
    assert plain_step_line(event_line("step", 1, 1e9, **step))  # as the trainer writes it (json.dumps)
    for kind, fields in (("step", {"loss": float("nan")}), ("step", {"grad_norm": float("-inf")}),
                         ("step", {"loss": None}), ("step", {"loss": 1e300}), ("step", {"run_note": "é"}),
                         ("nan", {"where": "loss"}), ("epoch_end", {}), ("note", {"message": "step"})):
        assert not plain_step_line(event_line(kind, 1, 1e9, **{**step, **fields})), (kind, fields)
    line = event_line("step", 1, 1e9, **step)
    for odd in ('"loss":1e999', '"loss":1E+400', '"loss":' + "9" * 400 + ".0", '"lo\\u0073s":null'):
        assert not plain_step_line(line.replace('"loss":0.25', odd)), odd  # parse to inf, or spell a null loss


def long_run_lines(*, nan_early: bool) -> list[str]:
    """A finished 6-epoch run of ~400 events; with `nan_early`, a NaN loss token in its third step event."""
    lines = list(realistic_run("long", nan=False, t0=1e9, epochs=6))
    if nan_early:
        steps = [i for i, line in enumerate(lines) if '"kind":"step"' in line]
        lines[steps[2]] = re.sub(r'"loss":[0-9.]+', '"loss":NaN', lines[steps[2]])
    return lines


def test_read_log_gives_the_outline_then_what_poll_gives_and_polling_goes_on_from_there(tmp_path):
    run = tmp_path / "long"
    run.mkdir()
    (run / "events.jsonl").write_text("".join(long_run_lines(nan_early=True)[:-1]))
    polled = RunWatcher(run, clock=FakeClock(1e12))
    polled.poll()
    watcher = RunWatcher(run, clock=FakeClock(1e12))
    outline, complete = list(watcher.read_log())
    assert watcher.state.n_events == 0 and watcher.condition == "waiting"  # read_log touched nothing
    assert not outline.complete and complete.complete
    # The outline: every NaN (the third step's, early in the log), every epoch and checkpoint, no plain step.
    assert [n.step for n in outline.state.nans] == [n.step for n in polled.state.nans] == [50]
    def rows(state: RunState) -> list[tuple]:  # (the step at an epoch's end: its event's, else the last step seen)
        return [(r.epoch, r.val_loss, r.volume_dice, r.is_best, r.nan_seen) for r in state.rows]

    assert rows(outline.state) == rows(polled.state) and outline.state.checkpoints == polled.state.checkpoints
    assert outline.state.nan_steps == {50} and len(outline.state.samples) == 1
    watcher.adopt(outline)
    assert watcher.outline_only and watcher.state is outline.state
    watcher.reading = True
    assert "the steps and charts follow" in watcher.notice
    watcher.adopt(complete)
    assert not watcher.reading and watcher.notice is None
    state = watcher.state
    assert state.n_events == polled.state.n_events and state.loss_points() == polled.state.loss_points()
    assert state.status == polled.state.status == "interrupted"
    append(run / "events.jsonl", long_run_lines(nan_early=True)[-1])  # the run_end
    assert watcher.poll() == 1 and state.status == "completed"


def test_read_log_stops_between_batches_when_asked(tmp_path, monkeypatch):
    monkeypatch.setattr("liverctl.watch.watcher.READ_BATCH_LINES", 10)
    run = tmp_path / "long"
    run.mkdir()
    (run / "events.jsonl").write_text("".join(long_run_lines(nan_early=False)))
    asked = []

    def stop() -> bool:
        asked.append(True)
        return len(asked) > 3

    reads = list(RunWatcher(run).read_log(stop))
    assert [r.complete for r in reads] == [False] and len(asked) == 4


# ---- charts: the series as data -------------------------------------------------------------------------


def fold(lines: list[str], clock: float = 1e12) -> RunState:
    state = RunState(clock=FakeClock(clock))
    state.feed(json.loads(line) for line in lines)
    return state


def guarded_run(name: str = "g") -> EventScript:
    """Steps 10..60 with a skipped step at 30 and a rollback at 40, an epoch_end at 50, an abort at 70."""
    s = EventScript(name)
    s.start(epochs=2, steps_per_epoch=50)
    for step, loss in ((10, 0.9), (20, 0.7)):
        s.add("step", after=60, step=step, epoch=0, loss=loss, lr=1e-3, samples_per_s=10.0)
    s.add("nan", after=60, step=30, epoch=0, where="loss", action="skip_step", counts={"skipped": 1, "rollbacks": 0})
    s.add("nan", after=60, step=40, epoch=0, where="loss", action="rollback", counts={"skipped": 3, "rollbacks": 1})
    s.add("step", after=60, step=50, epoch=0, loss=0.5, lr=5e-4, samples_per_s=12.0)
    s.epoch(1, step=50, seconds=300, after=10, val_loss=0.6, volume_dice=0.7, slice_dice=0.8, global_dice=0.75,
            is_best=True, epochs=2)
    s.add("step", after=60, step=60, epoch=1, loss=0.4, lr=2e-4, samples_per_s=14.0)
    s.add("nan", after=60, step=70, epoch=1, where="loss", action="abort", counts={"skipped": 4, "rollbacks": 2})
    return s


def test_ema_is_tensorboards_debiased_smoothing_and_steps_over_gaps():
    assert ema([1.0, None, 3.0], 0.5) == [1.0, None, pytest.approx((0.25 + 1.5) / 0.75)]
    assert ema([2.0, 4.0], 0.0) == [2.0, 4.0]


def long_spiky_state() -> RunState:
    """100k logged steps of a loss near 0.3 with one spike (5.0 at step 54,321), a skipped step at 77,777, and
    a throughput going round 44.0 .. 44.6 every 7 steps. The samples are put in directly: folding 100k events
    takes seconds, and the charts read only the samples and NaN records."""
    s = EventScript("long", t0=1e9)
    s.start(epochs=1)
    s.add("nan", after=77_777, step=77_777, epoch=0, where="loss", action="skip_step", counts={"skipped": 1})
    state = fold(s.lines)
    state.samples.extend(StepSample(i, 1e9 + i, 5.0 if i == 54_321 else 0.3 + 0.01 * math.sin(i), 1e-3,
                                    44.0 + 0.1 * (i % 7)) for i in range(100_000))
    return state


def test_a_spike_a_nan_mark_and_the_last_step_of_a_100k_step_log_stay_on_the_chart():
    """Every 125th point of a long log was drawn: the spike at step 54,321 and the rate's range fell between
    them (a loss chart topped at 0.31, a throughput going round 44.0-44.6 drawn as a pattern of its own). Now
    each drawn column keeps the lowest and highest of its points."""
    state = long_spiky_state()
    spec = loss_chart([state], ChartSettings(smoothing=0.0))
    train = spec.named("train")
    assert max(train.ys) == 5.0 and (train.xs[-1], train.ys[-1]) == (99_999, state.samples[-1].loss)
    plot = render_text(spec, 80, 20, color=False).splitlines()
    top = next(i for i, line in enumerate(plot) if "┌" in line) + 1
    canvas = plot[top][2:-1]  # the top row of the plot: the spike's tip alone, where it was
    spike = [i for i, ch in enumerate(canvas) if "\u2801" <= ch <= "\u28ff"]
    assert len(spike) == 1 and abs(spike[0] / len(canvas) - 0.54321) < 0.02, plot
    assert plot[top + 1].startswith("5┤")  # the spike sets the scale; the skipped step's mark on its level
    assert abs(plot[top + 1][2:-1].index("x") / len(canvas) - 0.77777) < 0.02, plot
    xs, ys = envelope(train.xs, train.ys, 150, 0, 99_999)
    assert len(xs) <= 4 * 150 and (54_321, 5.0) in zip(xs, ys, strict=True) and (xs[-1], ys[-1]) == (train.xs[-1], train.ys[-1])
    rate = throughput_chart([state], ChartSettings()).series[0]
    xs, ys = envelope(rate.xs, rate.ys, 150, 0, 99_999)
    assert (min(ys), max(ys)) == (44.0, pytest.approx(44.6)) and xs[-1] == 99_999


def test_a_new_version_of_a_grown_long_log_goes_over_its_new_steps_only(monkeypatch):
    """A new version of a live 100k-step log had its four charts worked out from all 100k steps again (the
    smoothing, every line's envelope): now the new steps are folded into what the last version had, and the
    charts are those of the whole log worked out afresh, the new steps' spike on them."""
    from liverctl.watch import charts

    state = long_spiky_state()
    settings = ChartSettings(smoothing=0.6)
    charts.all_charts([state], settings)
    state.samples.extend(StepSample(i, 1e9 + i, 9.0 if i == 100_020 else 0.3, 1e-3, 44.3) for i in range(100_000, 100_050))
    seen: list[int] = []
    finite_pairs = charts._finite_pairs
    monkeypatch.setattr(charts, "_finite_pairs", lambda xs, ys: seen.append(len(xs)) or finite_pairs(xs, ys))
    grown = charts.all_charts([state], settings)
    assert seen and max(seen) < 10_000, seen  # was 100,050 (the raw and the smoothed loss)
    monkeypatch.setattr(charts, "_finite_pairs", finite_pairs)
    charts._CURVES.clear()
    fresh = charts.all_charts([state], settings)
    assert grown == fresh
    train = grown["loss"].named("train")
    assert (100_020, 9.0) in zip(train.xs, train.ys, strict=True) and max(train.ys) == 9.0


def test_a_live_envelope_grown_in_parts_is_the_envelope_of_the_whole_line():
    """Grown in parts past twice its columns (its buckets merged in pairs, twice), a `LiveEnvelope` keeps the
    points one made of the whole line at once keeps: the spike, the first and last point, the lowest and highest."""
    import random

    from liverctl.watch.charts import SPEC_COLUMNS, LiveEnvelope

    rng = random.Random(7)
    n = 20 * SPEC_COLUMNS
    ys = [rng.gauss(0.3, 0.02) + (5.0 if i == 12_345 else 0.0) for i in range(n)]
    xs = [float(i) for i in range(n)]
    grown, at = LiveEnvelope(), 0
    for size in (5 * SPEC_COLUMNS, 7, 3 * SPEC_COLUMNS, 1, 4 * SPEC_COLUMNS, n):
        grown.add(xs[at:at + size], ys[at:at + size])
        at += size
        grown.indices()  # buckets made and kept up from here on
    whole = LiveEnvelope()
    whole.add(xs, ys)
    assert grown.points() == whole.points()
    kept_x, kept_y = whole.points()
    assert SPEC_COLUMNS * 4 < len(kept_x) <= 8 * SPEC_COLUMNS and (12_345.0, ys[12_345]) in zip(kept_x, kept_y, strict=True)
    assert (kept_x[0], kept_x[-1], max(kept_y), min(kept_y)) == (0.0, n - 1.0, max(ys), min(ys))


def _braille_rows(text: str) -> list[list[int | str]]:
    """Each character of a plain chart, a braille one as the rows of dots it lights (either half)."""
    rows = (0x01 | 0x08, 0x02 | 0x10, 0x04 | 0x20, 0x40 | 0x80)
    return [[sum(1 << r for r, bits in enumerate(rows) if (ord(ch) - 0x2800) & bits) if "\u2800" <= ch <= "\u28ff"
             else ch for ch in line] for line in text.splitlines()]


@pytest.mark.parametrize("order", ["steps", "times", "back and forth"])
def test_a_reduced_line_lights_the_rows_the_whole_line_lights(monkeypatch, order):
    """`envelope` keeps of each character of the chart the points that decide which of its rows the line
    lights: the chart is the same as the chart of every point, character for character, but for which half
    of a character a dot sits in."""
    import random

    from liverctl.watch import charts

    rng = random.Random(order)
    n = 3000
    xs = {"steps": [float(i) for i in range(n)], "times": sorted(rng.uniform(0, 7.3) for _ in range(n)),
          "back and forth": [float(i % 700 + i // 700 * 500) for i in range(n)]}[order]
    ys = [rng.gauss(0.3, 0.02) + (2.0 if rng.random() < 0.002 else 0.0) for _ in range(n)]
    spec = ChartSpec("loss", "step", [charts.Series("train", xs, ys, "gray"), charts.Series("smooth", xs, ema(ys, 0.9), "cyan+")])
    sizes = ((60, 12), (83, 17))
    reduced = [_braille_rows(render_text(spec, w, h, color=False)) for w, h in sizes]
    monkeypatch.setattr(charts, "envelope", lambda xs, ys, *args, **kwargs: (xs, ys))
    assert reduced == [_braille_rows(render_text(spec, w, h, color=False)) for w, h in sizes]


def test_axis_ticks_are_round_numbers_near_the_count_asked():
    assert nice_ticks(1, 7, 3) == [2, 4, 6]  # epochs: whole numbers, rather one tick more than one less
    assert nice_ticks(0, 3500, 8) == [0, 500, 1000, 1500, 2000, 2500, 3000, 3500]
    assert nice_ticks(2e-5, 1e-4, 4, integer=False) == pytest.approx([2e-5, 4e-5, 6e-5, 8e-5, 1e-4])
    assert nice_ticks(3.0, 3.0, 5) == [3.0]


def test_loss_chart_holds_raw_smoothed_val_and_nan_marks_by_action():
    state = fold(guarded_run().lines)
    spec = loss_chart([state], ChartSettings(smoothing=0.5))
    raw, smooth, val = spec.named("train"), spec.named("train (smoothed)"), spec.named("val")
    assert (raw.xs, raw.ys) == ([10, 20, 50, 60], [0.9, 0.7, 0.5, 0.4])
    assert smooth.xs == raw.xs and smooth.ys == pytest.approx(ema(raw.ys, 0.5))
    assert (val.xs, val.ys) == ([50], [0.6]) and val.scatter  # validation loss at the epoch's last step
    assert spec.named("NaN: skipped").xs == [30]
    assert spec.named("NaN: rollback").xs == [40] and spec.named("NaN: abort").xs == [70]
    assert {s.marker for s in spec.series if s.label.startswith("NaN")} == {"x", "R", "A"}  # told apart
    assert spec.named("NaN: skipped").ys == [0.9]  # on the top edge of the data
    assert sorted(x for x, _ in spec.vlines) == [40, 70]  # rollback and abort also get a vertical line
    assert "smoothing 0.5" in spec.title
    unsmoothed = loss_chart([state], ChartSettings(smoothing=0.0))
    assert unsmoothed.named("train").ys == [0.9, 0.7, 0.5, 0.4]
    with pytest.raises(KeyError):
        unsmoothed.named("train (smoothed)")  # raw only: no second copy of the same line


def test_val_loss_without_a_step_sits_at_the_last_step_of_its_epoch():
    state = fold(list(realistic_run("r", nan=False, t0=1e9, epochs=3)))
    val = loss_chart([state], ChartSettings()).named("val")
    assert val.xs == [225, 475, 725]  # the last step event of each epoch (step events every 25 steps)
    assert val.ys == [r.val_loss for r in state.rows]


def test_nan_steps_leave_gaps_in_the_loss_and_the_non_finite_epoch_value_out():
    s = two_epoch_run()
    s.add("step", after=5, step=20, epoch=2, loss=None)
    s.add("nan", step=20, epoch=2, where="step:loss", action="report")
    s.epoch(2, seconds=60, val_loss=None, volume_dice=None)
    state = fold(s.lines)
    loss = loss_chart([state], ChartSettings(smoothing=0.0))
    assert loss.named("train").xs == [0, 10]
    assert loss.named("NaN: value").xs == [20]
    dice = dice_chart([state], ChartSettings())
    assert dice.named("volume").xs == [0, 1] and dice.named("slice").xs == [0, 1, 2]


def test_dice_chart_has_the_three_figures_per_epoch_with_a_legend():
    state = fold(two_epoch_run().lines)
    spec = dice_chart([state], ChartSettings())
    assert [s.label for s in spec.series] == ["volume", "slice", "global"]
    assert spec.named("volume").xs == [0, 1] and spec.named("volume").ys == [0.80, 0.85]
    assert spec.named("slice").ys == [0.95, 0.95] and spec.xlabel == "epoch"


def test_step_charts_of_a_run_with_epochs_and_no_step_events_say_why_not_no_data_yet():
    """watch r1 --once --plot, the demo preset on the three real CT volumes (fold 2: 1 training step per epoch,
    3 epochs, train.log_every = 5), completed: its learning-rate and samples/s charts said 'no data yet', as if
    data were still to come. They now say why there is none; before a live run's first epoch, 'no data yet'."""
    from liverctl.runs.events import NO_STEP_EVENTS

    s = EventScript("r1")
    s.start(preset="demo", epochs=3)
    state = fold(s.lines)
    state.writer_alive = True  # a live run before its first step or epoch
    assert lr_chart([state], ChartSettings()).empty == "no data yet"
    for epoch in (1, 2, 3):
        s.epoch(epoch, step=epoch)
    assert lr_chart([fold(s.lines)], ChartSettings()).empty == NO_STEP_EVENTS  # epochs end, no step logged
    s.add("run_end", status="completed", epoch=3, step=3)
    ended = fold(s.lines)
    for chart in (lr_chart, throughput_chart):
        spec = chart([ended], ChartSettings())
        assert spec.empty == NO_STEP_EVENTS and not any(series.xs for series in spec.series)


def test_time_axis_measures_from_each_runs_start():
    state = fold(guarded_run().lines)
    spec = loss_chart([state], ChartSettings(smoothing=0.0, x_axis="time"))
    assert spec.xlabel == "minutes since start"
    assert spec.named("train").xs == pytest.approx([1.0, 2.0, 5.0, 6.0 + 10 / 60])
    assert lr_chart([state], ChartSettings(x_axis="time")).series[0].ys == [1e-3, 1e-3, 5e-4, 2e-4]


def test_several_runs_overlay_one_curve_each_with_their_names():
    a, b = fold(two_epoch_run("a").lines), fold(guarded_run("b").lines)
    spec = loss_chart([a, b], ChartSettings(smoothing=0.0))
    assert spec.named("a").xs == [0, 10] and spec.named("b").xs == [10, 20, 50, 60]
    assert spec.named("a").color != spec.named("b").color
    val = [s for s in spec.series if s.scatter and not (s.label or "").startswith("NaN")]
    assert [(v.label, v.color, v.ys) for v in val] == [  # val loss dots in each run's colour, no legend entry
        (None, spec.named("a").color, [0.25, 0.25]), (None, spec.named("b").color, [0.6])]
    assert spec.named("NaN: rollback").xs == [40]  # the marks of every run shown
    dice = dice_chart([a, b], ChartSettings())
    assert [s.label for s in dice.series] == ["a", "b"] and dice.title.startswith("volume Dice")
    assert dice.named("b").ys == [0.7]


def test_plot_text_fills_the_size_asked_and_can_be_plain():
    state = fold(guarded_run().lines)
    text = render_text(loss_chart([state], ChartSettings()), 90, 20, color=False)
    lines = text.splitlines()
    assert "\x1b" not in text and len(lines) == 20 and max(len(line) for line in lines) <= 90
    assert "train (smoothed)" in lines[0] and "NaN: x skipped" in text and "R rollback" in text
    empty = render_text(dice_chart([RunState()], ChartSettings()), 60, 10, color=False).split("\n")
    assert len(empty) == 10 and "no validation yet" in "".join(empty) and "┌" not in "".join(empty)


def test_a_run_with_one_step_shows_it_as_a_dot_on_an_axis_without_negative_steps():
    """The first step event alone: a braille speck one pixel wide, on an x axis from step -1 to 1."""
    s = EventScript("r")
    s.start()
    s.add("step", after=5, step=0, epoch=0, loss=0.63, lr=1e-4, samples_per_s=44.0)
    state = fold(s.lines)
    for spec in all_charts([state], ChartSettings()).values():
        if not spec.has_data:
            continue
        plot = render_text(spec, 60, 12, color=False).splitlines()
        assert any("●" in line for line in plot), (spec.title, plot)
        axis = plot[-1].split()
        assert axis == ["0", "1"], (spec.title, axis)


def absurd_run() -> EventScript:
    """A log from someone else with finite but absurd numbers (1e308) in a loss, a Dice, a rate and a NaN
    report's step loss; every other value ordinary."""
    s = EventScript("absurd")
    s.start(epochs=3)
    for step in range(1, 6):
        s.add("step", after=1, epoch=0, step=step, loss=1e308 if step == 3 else 0.5, lr=1e308 if step == 4 else 1e-3,
              samples_per_s=-1e308 if step == 2 else 10.0)
    s.add("step", after=1, epoch=0, step=6, loss=None, lr=1e-3, samples_per_s=10.0)  # null: a NaN mark
    s.epoch(0, step=6, seconds=60, volume_dice=1e308, val_loss=-1e308, is_best=True)
    s.epoch(1, step=6, seconds=60, volume_dice=0.6, is_best=True)
    return s


def test_charts_of_absurd_numbers_draw_the_rest():
    """plotext overflowed on 1e308 (OverflowError: cannot convert float infinity to integer), a traceback in
    `watch --plot` and the TUI; such points are now left off the chart, the others drawn."""
    state = fold(absurd_run().lines)
    for settings in (ChartSettings(), ChartSettings(x_axis="time")):
        for name, spec in all_charts([state], settings).items():
            text = render_text(spec, 80, 20, color=False)
            assert len(text.splitlines()) == 20, name
            assert all(abs(y) <= 1e100 for s in spec.series for y in s.ys), name
    assert loss_chart([state], ChartSettings()).series[0].ys == [0.5] * 4


def test_charts_from_the_cache_follow_new_events_and_settings():
    """A key press redraws a long log from curves worked out once per version of its state; they must follow
    every event folded since, a NaN at a step already charted included, exactly as a fresh state charts them."""
    lines = long_run_lines(nan_early=False)
    half = len(lines) // 2
    nan = event_line("nan", 999, 1e9 + 10, run="long", epoch=0, step=75, where="loss", action="skip_step")
    combos = [ChartSettings(smoothing=w, x_axis=x, show_raw=r) for w in (0.0, 0.6, 0.9) for x in ("step", "time")
              for r in (True, False)]
    state = fold(lines[:half])
    for settings in combos:
        all_charts([state], settings)
    state.feed(json.loads(line) for line in [*lines[half:], nan])
    fresh = fold([*lines, nan])
    other = fold(absurd_run().lines)
    for settings in combos:
        assert all_charts([state], settings) == all_charts([fold([*lines, nan])], settings), settings
        assert all_charts([state, other], settings) == all_charts([fresh, fold(absurd_run().lines)], settings)
    assert 75.0 not in loss_chart([state], ChartSettings(smoothing=0.6)).named("train").xs  # the NaN's step


def test_finite_pairs_keeps_what_the_point_by_point_test_keeps():
    from liverctl.watch.charts import _finite_pairs

    odd = [None, float("nan"), float("inf"), -float("inf"), 1e300, -1e300, 1e100, -1e100, 0.0, 3]
    for xs, ys in [(odd, odd[::-1]), ([1.0, 2.0], [0.5, 0.25]), ([], []), ([1.0, 2.0], [float("inf"), float("-inf")]),
                   ([1e308, 1e308], [1.0, 2.0]), ([float("nan"), 1.0], [1.0, 2.0]), ([1.0, 2.0], [0.5, float("nan")])]:
        keep = [i for i, (x, y) in enumerate(zip(xs, ys, strict=True))
                if x is not None and y is not None and -1e100 <= x <= 1e100 and -1e100 <= y <= 1e100]
        assert _finite_pairs(xs, ys) == ([xs[i] for i in keep], [ys[i] for i in keep]), (xs, ys)


# ---- the app, headless ---------------------------------------------------------------------------------


async def settle(pilot, condition, timeout: float = 5.0) -> None:
    """Let the app's timer run until `condition()` holds (the machine is shared: no fixed sleeps)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition() and loop.time() < deadline:
        await pilot.pause(POLL_S)
    assert condition()


def row_keys(table: EpochTable) -> list[str]:
    return [row.key.value for row in table.ordered_rows]


def header_plain(app) -> str:
    return str(app.query_one(RunHeader).content)


async def test_app_rows_appear_and_status_follows_the_log(tmp_path):
    run = tmp_path / "runs" / "r1"
    s = two_epoch_run()
    run.mkdir(parents=True)
    append(run / "events.jsonl", *s.lines[:4])  # run_start, two steps, epoch 0
    app = make_watch_app(run, poll_seconds=POLL_S, clock=FakeClock(s.t))
    writer = RunLock(run).acquire()  # the lock held: a live writer  # noqa: F841 - held to the test's end
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one(EpochTable)
        await settle(pilot, lambda: row_keys(table) == ["0"])
        assert "RUNNING" in header_plain(app)
        assert not app.query_one(NanBanner).display
        append(run / "events.jsonl", *s.lines[4:])
        await settle(pilot, lambda: table.row_count == 2)
        assert "★" in str(table.get_row("1")[-1])
        assert table.fixed_rows == 0  # the best is the latest epoch: nothing to pin
        append(run / "events.jsonl", s.epoch(2, seconds=60, volume_dice=0.84))
        await settle(pilot, lambda: row_keys(table) == ["best", "0", "1", "2"])  # the best pinned on top
        assert table.fixed_rows == 1 and str(table.get_row("best")[0]) == "best 1"
        append(run / "events.jsonl", s.add("run_end", status="completed", best={"epoch": 1, "volume_dice": 0.85}))
        await settle(pilot, lambda: "COMPLETED" in header_plain(app))
        append(run / "events.jsonl", s.add("run_end", status="failed", message="CUDA out of memory"))
        await settle(pilot, lambda: "FAILED" in header_plain(app))
        assert "CUDA out of memory" in header_plain(app)


async def test_app_shows_stalled_with_a_fake_clock(tmp_path):
    run = tmp_path / "r1"
    s = two_epoch_run()
    s.write(run / "events.jsonl")
    clock = FakeClock(s.t + 10)
    app = make_watch_app(run, poll_seconds=POLL_S, clock=clock)
    writer = RunLock(run).acquire()  # noqa: F841 - held to the test's end
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, lambda: "RUNNING" in header_plain(app))
        clock.t += 1000
        # the title follows at the app's next poll (the header may be drawn first, at a resize)
        await settle(pilot, lambda: "stalled? nothing written for" in header_plain(app) and app.sub_title.endswith("stalled"))
        assert "RUNNING" in header_plain(app)  # the lock is held: running


async def test_app_shows_a_run_nobody_writes_as_interrupted(tmp_path):
    run = tmp_path / "r1"
    s = two_epoch_run()
    s.write(run / "events.jsonl")  # no run_end, and no process holds the lock: killed
    app = make_watch_app(run, poll_seconds=POLL_S, clock=FakeClock(s.t + 10))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, lambda: "INTERRUPTED" in header_plain(app))


async def test_app_nan_banner_within_one_refresh_and_dismissed(tmp_path):
    run = tmp_path / "r1"
    s = two_epoch_run()
    s.write(run / "events.jsonl")
    app = make_watch_app(run, poll_seconds=60.0, clock=FakeClock(s.t))  # refreshes driven by the test
    async with app.run_test(size=(120, 40)) as pilot:
        banner = app.query_one(NanBanner)
        await pilot.pause()
        assert not banner.display
        append(run / "events.jsonl", s.add("nan", epoch=2, step=130, where="loss", action="skip_step",
                                           counts={"skipped": 1, "rollbacks": 0}, message="fp16 overflow"))
        app.refresh_from_log()  # one refresh
        await pilot.pause()
        assert banner.display
        text = str(banner.content)
        # two epochs done: the NaN came in the third, whatever number the event itself carries
        assert "NaN" in text and "epoch 3/3, step 130" in text and "skip_step" in text
        assert app.query_one("#loss-chart", Chart).spec.named("NaN: skipped").xs == [130]
        await pilot.press("d")
        assert not banner.display
        app.refresh_from_log()
        await pilot.pause()
        assert not banner.display  # stays dismissed...
        append(run / "events.jsonl", s.add("nan", epoch=2, step=140, where="loss", action="rollback",
                                           counts={"skipped": 4, "rollbacks": 1}))
        app.refresh_from_log()
        await pilot.pause()
        assert banner.display and "rollback" in str(banner.content)  # ...until a new NaN comes


async def test_app_nan_banner_comes_back_for_a_log_replaced_after_a_dismissal(tmp_path):
    run = tmp_path / "r1"
    s = two_epoch_run()
    for step in (130, 140):
        s.add("nan", epoch=2, step=step, where="loss", action="skip_step", counts={"skipped": 1, "rollbacks": 0})
    s.write(run / "events.jsonl")
    app = make_watch_app(run, poll_seconds=60.0, clock=FakeClock(s.t))  # refreshes driven by the test
    async with app.run_test(size=(120, 40)) as pilot:
        banner = app.query_one(NanBanner)
        await pilot.pause()
        assert banner.display
        await pilot.press("d")
        assert not banner.display
        # The run started again from scratch in the same folder: a new log whose first NaN is news.
        fresh = EventScript("r1", t0=s.t + 100)
        fresh.start()
        fresh.add("nan", after=5, epoch=0, step=3, where="loss", action="skip_step", counts={"skipped": 1})
        (run / "events.jsonl").unlink()
        fresh.write(run / "events.jsonl")
        app.refresh_from_log()
        await pilot.pause()
        assert len(app.watcher.state.nans) == 1
        assert banner.display  # was hidden: one NaN is not more than the two dismissed in the old log


async def test_app_nan_banner_after_a_null_value(tmp_path):
    run = tmp_path / "r1"
    s = two_epoch_run()
    s.write(run / "events.jsonl")
    app = make_watch_app(run, poll_seconds=POLL_S, clock=FakeClock(s.t))
    writer = RunLock(run).acquire()  # the lock held: a live writer  # noqa: F841 - held to the test's end
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one(EpochTable)
        await settle(pilot, lambda: row_keys(table) == ["0", "1"])
        append(run / "events.jsonl", s.epoch(2, seconds=60, train_loss=None, volume_dice=0.5))
        await settle(pilot, lambda: app.query_one(NanBanner).display)
        assert "train_loss" in str(app.query_one(NanBanner).content)
        assert row_keys(table) == ["best", "0", "1", "2"]
        assert str(table.get_row("2")[1]) == "NaN"


async def test_app_copes_with_torn_lines_unknown_kinds_missing_file_and_deletion(tmp_path):
    run = tmp_path / "r1"
    run.mkdir()
    s = two_epoch_run()
    app = make_watch_app(run, poll_seconds=POLL_S, clock=FakeClock(s.t))
    writer = RunLock(run).acquire()  # the lock held: a live writer  # noqa: F841 - held to the test's end
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one(EpochTable)
        await settle(pilot, lambda: "waiting for" in header_plain(app))
        line = s.lines[3]  # epoch 0
        append(run / "events.jsonl", *s.lines[:3], '{"v":1,"kind":"gpu_temp","celsius":71}\n', line[:15])
        await settle(pilot, lambda: app.watcher.state.n_events == 4)
        assert row_keys(table) == ["current"]  # the steps of the unfinished epoch
        append(run / "events.jsonl", line[15:])
        await settle(pilot, lambda: row_keys(table) == ["0"])
        assert app.watcher.state.unknown_kinds == {"gpu_temp": 1}
        shutil.rmtree(run)
        await settle(pilot, lambda: "run folder deleted" in header_plain(app))
        assert app.is_running and row_keys(table) == ["0"]


async def test_app_keeps_running_over_absurd_numbers(tmp_path):
    run = tmp_path / "runs" / "absurd"
    s = absurd_run()
    s.write(run / "events.jsonl")
    app = make_watch_app(run, poll_seconds=POLL_S, clock=FakeClock(s.t))
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one(EpochTable)
        await settle(pilot, lambda: row_keys(table) == ["0", "1"])
        for key in "xtsx":  # time axis, the other view, smoothing: every chart drawn again
            await pilot.press(key)
            await pilot.pause(POLL_S * 2)
        assert app.is_running


async def test_app_switches_runs_with_keys_and_picker(tmp_path):
    import os

    root = tmp_path / "runs"
    for i, name in enumerate(("a", "b")):
        s = EventScript(name)
        s.start(preset=f"preset-{name}")
        s.write(root / name / "events.jsonl")
        os.utime(root / name / "events.jsonl", (1000 + i, 1000 + i))  # b is the newest
    app = make_watch_app(root / "a", poll_seconds=POLL_S, clock=FakeClock())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, lambda: "preset-a" in header_plain(app))
        await pilot.press("right_square_bracket")
        await settle(pilot, lambda: "preset-b" in header_plain(app))
        await pilot.press("left_square_bracket")
        await settle(pilot, lambda: "preset-a" in header_plain(app))
        await pilot.press("r")  # picker lists b, a (newest first) with a highlighted
        await pilot.pause()
        await pilot.press("up", "enter")
        await settle(pilot, lambda: "preset-b" in header_plain(app))
        assert app.watcher.run_dir == root / "b"
        assert len(app.screen_stack) == 1  # the picker closed


def two_runs(root: Path) -> tuple[Path, Path]:
    import os

    for i, s in enumerate((two_epoch_run("a"), guarded_run("b"))):
        s.write(root / s.run / "events.jsonl")
        os.utime(root / s.run / "events.jsonl", (1000 + i, 1000 + i))  # b is the newest
    return root / "a", root / "b"


async def test_app_charts_follow_the_log_and_settings_survive_a_run_switch(tmp_path):
    a, b = two_runs(tmp_path / "runs")
    app = make_watch_app(a, poll_seconds=POLL_S, clock=FakeClock(1e12))
    async with app.run_test(size=(160, 48)) as pilot:
        loss = app.charts["loss"]
        await settle(pilot, lambda: loss.spec is not None and loss.spec.has_data)
        assert loss.spec.named("train").xs == [0, 10] and loss.spec.named("val").ys == [0.25, 0.25]
        assert app.charts["dice"].spec.named("volume").ys == [0.80, 0.85]
        await pilot.press("s", "s", "x")  # smoothing 0.6 -> 0.8 -> 0.9, x axis: time
        assert (app.settings.smoothing, app.settings.x_axis) == (0.9, "time")
        assert "smoothing 0.9" in loss.spec.title and loss.spec.xlabel == "minutes since start"
        await pilot.press("right_square_bracket")
        await settle(pilot, lambda: app.watcher.run_dir == b)
        assert (app.settings.smoothing, app.settings.x_axis) == (0.9, "time")  # kept
        assert "smoothing 0.9" in loss.spec.title and loss.spec.named("NaN: abort").xs  # b's curves
        assert loss.spec.named("train (smoothed)").ys == pytest.approx(ema([0.9, 0.7, 0.5, 0.4], 0.9))


async def test_app_rebuilds_slow_charts_at_most_every_ten_builds_worth_of_time(tmp_path, monkeypatch):
    """A long log growing fast: the charts (every step of the log) must not be rebuilt on every poll, or the
    app has no time left for keys; the header and table still follow every poll."""
    import liverctl.watch.app as app_module

    mono = FakeClock(0.0)
    builds = []

    def slow_charts(states, settings):  # a build that takes 1 s on the app's monotonic clock
        builds.append(len(states[0].samples))
        mono.t += 1.0
        return all_charts(states, settings)

    monkeypatch.setattr(app_module, "_monotonic", mono, raising=False)
    monkeypatch.setattr(app_module, "all_charts", slow_charts)
    run = tmp_path / "r1"
    s = two_epoch_run()
    s.write(run / "events.jsonl")
    app = make_watch_app(run, poll_seconds=60.0, clock=FakeClock(s.t))  # refreshes driven by the test
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert builds == [2]
        for k in range(5):  # five polls with new steps, within 10 s of a 1 s build
            append(run / "events.jsonl", s.add("step", after=1, step=20 + k, epoch=2, loss=0.5))
            app.refresh_from_log()
            mono.t += 1.0
        await pilot.pause()
        assert builds == [2]  # was [2, 3, 4, 5, 6, 7]: a rebuild on every poll
        assert str(app.query_one(EpochTable).get_row("current")[1]) == "~0.5000"  # the table followed every poll
        await pilot.press("s")  # new settings: at once
        assert builds == [2, 7]
        mono.t += 11.0
        app.refresh_from_log()  # nothing new: nothing to rebuild
        assert builds == [2, 7]
        append(run / "events.jsonl", s.add("step", after=1, step=30, epoch=2, loss=0.5))
        app.refresh_from_log()
        assert builds == [2, 7, 8]
        assert app.query_one("#loss-chart", Chart).spec.series[0].xs[-1] == 30


async def test_app_overlays_runs_with_a_table_of_their_best_figures(tmp_path):
    a, b = two_runs(tmp_path / "runs")
    app = make_watch_app(a, compare=[b], poll_seconds=POLL_S, clock=FakeClock(1e12))
    async with app.run_test(size=(160, 48)) as pilot:
        loss = app.charts["loss"]
        await settle(pilot, lambda: loss.spec is not None and loss.spec.has_data)
        assert loss.spec.named("a").xs == [0, 10] and loss.spec.named("b").xs == [10, 20, 50, 60]
        assert [s.label for s in app.charts["dice"].spec.series] == ["a", "b"]
        table = app.query_one(CompareTable)
        assert table.row_count == 2 and table.display and app.view == "runs"
        assert str(table.get_row("1")[4]) == "0.7000 (ep 1)" and str(table.get_row("0")[4]) == "0.8500 (ep 1)"
        assert [str(table.get_row(k)[2]) for k in ("0", "1")] == ["0", "3"]  # NaN records: b skipped, rolled back, aborted
        assert "overlaid: b" in header_plain(app)
        await pilot.press("c")  # the picker: b ticked; untick it and show
        await pilot.pause()
        await pilot.press("space", "enter")
        await settle(pilot, lambda: app.compare == [])
        assert [s.label for s in loss.spec.series][:2] == ["train", "train (smoothed)"]  # one run again
        await pilot.press("c")
        await pilot.pause()
        await pilot.press("space", "enter")  # tick b again
        await settle(pilot, lambda: [w.run_dir for w in app.compare] == [b])
        assert loss.spec.named("b").xs == [10, 20, 50, 60]


async def test_app_at_60x20_under_a_nan_banner_keeps_table_and_checkpoints_on_screen(tmp_path):
    run = tmp_path / "runs" / "n"
    run.mkdir(parents=True)
    (run / "events.jsonl").write_text("".join(realistic_run("n", nan=True, t0=1e9)))
    app = make_watch_app(run, poll_seconds=POLL_S, clock=FakeClock(1e12))
    async with app.run_test(size=(60, 20)) as pilot:
        await settle(pilot, lambda: app.charts["loss"].spec is not None and app.table.row_count > 0)
        assert app.banner.display
        for widget in (app.banner, app.header, app.charts["loss"], app.table, app.info):
            # was: charts 18 lines high from line 9, the table at line 27 and the checkpoints at 36 of 20
            assert widget.region.height > 0 and widget.region.bottom <= 19, (widget, widget.region)


def painted(widget) -> list[str]:
    """The lines of `widget` as painted on the screen (padding included, trailing spaces off)."""
    from textual.geometry import Region

    size = widget.outer_size
    return [strip.text.rstrip() for strip in widget.render_lines(Region(0, 0, size.width, size.height))]


async def test_app_at_80x24_the_nan_banner_keeps_what_happened_where_and_its_key(tmp_path):
    """At 80 x 24 the banner's lines were cut at the edge: "[d: dismiss]" was off the first line and the guard's
    message cut with its time of day, epoch and "guard:" still in. Now what is least needed goes first: the
    key, the count, each record's step and action stay; a single record's message goes on into the line left; a screen made narrower gets it at once."""
    run = tmp_path / "runs" / "n"
    run.mkdir(parents=True)
    (run / "events.jsonl").write_text("".join(realistic_run("n", nan=True, t0=1e9)))
    app = make_watch_app(run, poll_seconds=POLL_S, clock=FakeClock(1e12))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, lambda: app.banner.display and app.table.row_count > 0)
        await pilot.pause()
        head, first, latest = painted(app.banner)
        assert head.startswith(" ⚠ NaN DETECTED: 8 records: ") and head.endswith("  [d: dismiss]"), head
        assert first.startswith(" first:  loss · step 1350 · skip_step · non-finite loss"), first
        assert latest.startswith(" latest: loss · step 1475 · abort · non-finite loss after"), latest
        assert all(len(line) <= 80 for line in (head, first, latest))
        await pilot.press("d")
        assert not app.banner.display

    one = tmp_path / "runs" / "one"
    s = two_epoch_run()
    s.add("nan", epoch=2, step=130, where="loss", action="abort", counts={"skipped": 0, "rollbacks": 2},
          message="non-finite loss after 2 rollbacks: stopping (try bf16 or a smaller lr)")
    s.write(one / "events.jsonl")
    app = make_watch_app(one, poll_seconds=3600.0, clock=FakeClock(s.t))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, lambda: app.banner.display)
        await pilot.resize_terminal(80, 24)  # drawn again for its new width, before the next poll
        await pilot.pause()
        lines = painted(app.banner)
        assert len(lines) == 3 and lines[0].endswith("[d: dismiss]") and "step 130 · abort" in lines[1], lines
        assert " ".join(" ".join(lines[1:]).split()).endswith("stopping (try bf16 or a smaller lr)"), lines


def hold_complete_reads(monkeypatch) -> tuple[threading.Event, list[bool]]:
    """Make every log a long one, and hold `read_log`'s complete read back until the event is set (or the app
    asks it to stop: recorded in the list). What a 100k-step log does, in a few hundred events."""
    from liverctl.watch import watcher as watcher_module

    monkeypatch.setattr(watcher_module, "BACKGROUND_READ_BYTES", 1000)
    release, stopped = threading.Event(), []
    read_log = RunWatcher.read_log

    def held(self, stop=lambda: False):
        reads = read_log(self, stop)
        yield next(reads)  # the outline
        while not release.wait(0.01):
            if stop():
                stopped.append(True)
                return
        yield from reads

    monkeypatch.setattr(RunWatcher, "read_log", held)
    return release, stopped


async def test_app_paints_a_long_log_flags_its_nan_and_takes_keys_before_it_is_read(tmp_path, monkeypatch):
    release, _ = hold_complete_reads(monkeypatch)
    run = tmp_path / "runs" / "long"
    run.mkdir(parents=True)
    lines = long_run_lines(nan_early=True)
    (run / "events.jsonl").write_text("".join(lines))
    app = make_watch_app(run, poll_seconds=POLL_S, clock=FakeClock(1e12))
    async with app.run_test(size=(120, 40)) as pilot:  # was: the whole log read before the first paint
        await settle(pilot, lambda: app.banner.display)  # the NaN in the third step, from the outline
        assert app.watcher.reading and "the steps and charts follow" in header_plain(app)
        assert row_keys(app.table) == [str(e) for e in range(1, 7)] and "COMPLETED" in header_plain(app)
        assert "epoch 1/6, step 50" in str(app.banner.content)
        await pilot.press("s", "d")  # keys are taken while the log is read
        assert app.settings.smoothing == 0.8 and not app.banner.display
        release.set()
        await settle(pilot, lambda: not app.watcher.reading)
        assert app.watcher.state.n_events == len(lines) and "reading" not in header_plain(app)
        await pilot.pause()
        assert not app.banner.display  # the dismissal holds for the complete read of the same log
        assert app.charts["loss"].spec.named("train (smoothed)").xs[-1] == 1475 and "0.8" in app.charts["loss"].spec.title
        append(run / "events.jsonl", event_line("note", 999, 2e9, run="long", message="polled on"))
        await settle(pilot, lambda: "polled on" in str(app.info.content))


async def test_app_quits_at_once_while_a_long_log_is_read(tmp_path, monkeypatch):
    _, stopped = hold_complete_reads(monkeypatch)
    run = tmp_path / "runs" / "long"
    run.mkdir(parents=True)
    (run / "events.jsonl").write_text("".join(long_run_lines(nan_early=False)))
    app = make_watch_app(run, poll_seconds=POLL_S, clock=FakeClock(1e12))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, lambda: app.watcher.outline_only)
        await pilot.press("q")
    for _ in range(100):  # the worker thread sees the app's cancel within one wait
        if stopped:
            break
        await asyncio.sleep(0.02)
    assert stopped == [True]


async def test_app_settings_key_leaves_the_tables_and_unchanged_charts_alone(tmp_path):
    """`s` rebuilt the epochs table (a long log's hundred rows drawn again, the cursor sent back to the bottom)
    and drew every chart again, though only the loss chart shows the smoothing."""
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "events.jsonl").write_text("".join(realistic_run("r", nan=False, t0=1e9)))
    app = make_watch_app(run, poll_seconds=60.0, clock=FakeClock(1e12))  # refreshes driven by the test
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, lambda: app.charts["loss"].spec is not None and app.table.row_count > 0)
        app.table.move_cursor(row=0)
        dice, loss = app.charts["dice"].spec, app.charts["loss"].spec
        await pilot.press("s")
        await pilot.pause()
        assert app.settings.smoothing == 0.8 and "0.8" in app.charts["loss"].spec.title
        assert app.charts["loss"].spec is not loss and app.charts["dice"].spec is dice
        assert app.table.cursor_row == 0
        await pilot.press("x")
        await pilot.pause()
        assert app.charts["dice"].spec.xlabel != dice.xlabel and app.table.cursor_row == 0


@pytest.mark.parametrize("change", ["truncated to zero", "rewritten shorter", "replaced, with a NaN"])
async def test_app_reads_a_long_log_replaced_or_truncated_under_it_off_the_ui_thread(tmp_path, monkeypatch, change):
    """A long log replaced or truncated while watched was read again on the UI thread (in `poll`), keys and
    screen waiting for it; now it goes the way of a first read: the outline (its NaN) at once, then all of it."""
    release, _ = hold_complete_reads(monkeypatch)
    release.set()
    run = tmp_path / "runs" / "long"
    run.mkdir(parents=True)
    log = run / "events.jsonl"
    log.write_text("".join(long_run_lines(nan_early=False)))
    app = make_watch_app(run, poll_seconds=60.0, clock=FakeClock(1e12))  # refreshes driven by the test
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, lambda: app.watcher.state.n_events > 0 and not app.watcher.reading)
        assert row_keys(app.table) == [str(e) for e in range(1, 7)] and not app.banner.display
        release.clear()
        if change == "truncated to zero":
            lines = []
            log.write_text("")
        elif change == "rewritten shorter":  # the same file, written again with the first three epochs
            lines = long_run_lines(nan_early=False)[:len(long_run_lines(nan_early=False)) // 2]
            log.write_text("".join(lines))
        else:  # a new file in its place, as long, with a NaN loss early on
            lines = long_run_lines(nan_early=True)
            log.unlink()
            log.write_text("".join(lines))
        app.refresh_from_log()
        await pilot.pause()
        if lines:  # read in the worker: its outline on screen, the keys taken, while the rest is read
            await settle(pilot, lambda: app.watcher.outline_only)
            assert app.watcher.reading and "the steps and charts follow" in header_plain(app)
            assert app.banner.display == (change == "replaced, with a NaN")
            await pilot.press("s")
            assert app.settings.smoothing == 0.8
            release.set()
            await settle(pilot, lambda: not app.watcher.reading)
        assert app.watcher.state.n_events == len(lines) and "reading" not in header_plain(app)
        assert app.banner.display == (change == "replaced, with a NaN")
        if change == "replaced, with a NaN":
            assert "epoch 1/6, step 50" in str(app.banner.content)
        epochs = {"truncated to zero": 0, "rewritten shorter": 3, "replaced, with a NaN": 6}[change]
        await settle(pilot, lambda: row_keys(app.table) == [str(e) for e in range(1, epochs + 1)])
        append(log, event_line("note", 999, 2e9, run="long", message="polled on"))
        app.refresh_from_log()
        await settle(pilot, lambda: "polled on" in str(app.info.content))


@pytest.mark.parametrize("size", [(80, 24), (120, 36), (120, 50), (160, 48), (200, 60)])
async def test_app_layout_fills_the_screen_without_zero_size_widgets(tmp_path, size):
    a, b = two_runs(tmp_path / "runs")
    lines = list(realistic_run("b", nan=False, t0=1e9, epochs=30))  # a table that scrolls...
    lines.insert(-1, event_line("nan", 9999, 2e9, run="b", epoch=30, step=7490, where="loss", action="skip_step"))
    (b / "events.jsonl").write_text("".join(lines))  # ...under a NaN banner
    app = make_watch_app(b, poll_seconds=POLL_S, clock=FakeClock(1e12))
    async with app.run_test(size=size) as pilot:
        await settle(pilot, lambda: app.charts["loss"].spec is not None and app.table.row_count > 0)
        shown = [app.header, app.banner, app.charts["loss"], app.charts["dice"], app.table, app.info]
        wide = size[0] >= 170 or (size[0] >= 120 and size[1] >= 44)
        if wide:
            shown += [app.charts["lr"], app.charts["throughput"]]
            assert min(app.charts[c].size.height for c in ("lr", "throughput")) >= 6  # room for a curve
        for widget in shown:
            assert widget.display and widget.size.width > 0 and widget.size.height > 0, widget
        assert app.charts["loss"].size.width >= size[0] // 2 and app.charts["loss"].size.height >= 6
        assert app.table.virtual_size.width <= app.table.size.width  # every column in view: none cropped
        # Nothing below the footer's line is left over: the widgets' heights add up to the screen's.
        used = app.banner.outer_size.height + app.header.outer_size.height + app.info.outer_size.height + 1
        used += app.query_one("#top-row").outer_size.height + app.query_one("#bottom-row").outer_size.height
        assert used == size[1]
        assert not wide or not app.screen.has_class("-narrow")
        if not wide:  # the learning-rate and throughput charts take the table's place in turn
            assert not app.charts["lr"].display or app.charts["lr"].size.width == 0
            await pilot.press("t", "t")
            await pilot.pause()
            assert app.view == "rates" and app.charts["lr"].size.width > 0 and app.charts["lr"].size.height > 0
            assert app.charts["throughput"].size.width > 0


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_header_breaks_its_lines_between_values(tmp_path, size):
    """80 columns: `GPU 9.2 /` ended one line and `peak 11.8 GB` began the next, `44.5` and `samples/s` too."""
    run = tmp_path / "runs" / "v5-focal-f0"
    run.mkdir(parents=True)
    (run / "events.jsonl").write_text("".join(realistic_run("v5-focal-f0", nan=True, t0=1e9)))
    app = make_watch_app(run, poll_seconds=POLL_S, clock=FakeClock(1e9 + 9000))
    async with app.run_test(size=size) as pilot:
        await settle(pilot, lambda: "NAN_ABORT" in header_plain(app))
        lines = header_plain(app).splitlines()
        assert all(len(line) <= app.header.size.width for line in lines), lines  # nothing left to wrap
        for value in ("GPU 9.2 / peak 11.8 GB", "44.5 samples/s", "best volume Dice 0.9262 (epoch 5, 29m32s ago)",
                      "epochs done 5/15"):
            assert any(value in line for line in lines), (value, lines)


async def test_header_is_broken_again_at_its_new_width_after_a_resize(tmp_path):
    """A finished run's header is drawn once; it was left at the width it was drawn at (0 before the first
    layout: one line each, wider than the screen), as the suite saw under load."""
    run = tmp_path / "runs" / "v5-focal-f0"
    run.mkdir(parents=True)
    (run / "events.jsonl").write_text("".join(realistic_run("v5-focal-f0", nan=True, t0=1e9)))
    app = make_watch_app(run, poll_seconds=3600, clock=FakeClock(1e9 + 9000))  # no poll redraws it
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot, lambda: "NAN_ABORT" in header_plain(app))
        await pilot.resize_terminal(80, 24)
        await settle(pilot, lambda: app.header.size.width <= 80)
        await settle(pilot, lambda: all(len(line) <= app.header.size.width for line in header_plain(app).splitlines()))
        assert any("GPU 9.2 / peak 11.8 GB" in line for line in header_plain(app).splitlines())


async def test_header_has_progress_eta_best_and_gpu_memory(tmp_path):
    run = tmp_path / "r"
    s = guarded_run("r")
    s.lines = s.lines[:7]  # up to the epoch_end: 1 of 2 epochs done
    s.add("step", after=60, step=75, epoch=1, loss=0.4, lr=2e-4, samples_per_s=14.0, gpu_mem_gb=3.25,
          gpu_mem_peak_gb=5.5)
    s.write(run / "events.jsonl")
    app = make_watch_app(run, poll_seconds=POLL_S, clock=FakeClock(s.t + 1))
    writer = RunLock(run).acquire()  # noqa: F841 - held to the test's end
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot, lambda: "RUNNING" in header_plain(app))
        text = header_plain(app)
        assert "75%" in text and "epoch 2/2 step 25/50" in text  # 1.5 of 2 epochs
        assert "ETA" in text and "14.0 samples/s" in text and "device cpu" in text and "amp off" in text
        assert f"best volume Dice 0.7000 (epoch 1, {fmt_duration(s.t + 1 - app.watcher.state.rows[0].ts)} ago)" in text
        assert "GPU 3.2 / peak 5.5 GB" in text


def test_make_watch_app_over_a_runs_folder_opens_the_newest(tmp_path):
    import os

    root = tmp_path / "runs"
    for i, name in enumerate(("old", "new")):
        EventScript(name).write(root / name / "events.jsonl")
        os.utime(root / name / "events.jsonl", (1000 + i, 1000 + i))
    assert make_watch_app(root).watcher.run_dir == root / "new"
    assert find_run(None, root) == (root / "new", root)
    assert find_run("old", root) == (root / "old", root)
    with pytest.raises(LiverctlError):
        find_run("missing", root)
    with pytest.raises(LiverctlError):
        find_run(None, tmp_path / "nothing")


# ---- watch --once ----------------------------------------------------------------------------------------


def write_realistic(run_dir: Path, *, nan: bool) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "events.jsonl").write_text("".join(realistic_run(run_dir.name, nan=nan, t0=1e9, epochs=6)))
    return run_dir


def test_once_prints_the_summary_and_exits_0_for_a_clean_run(tmp_path):
    run = write_realistic(tmp_path / "runs" / "clean", nan=False)
    result = CliRunner().invoke(cli_app, ["watch", "--once", str(run)])
    assert result.exit_code == 0, result.output
    assert "clean" in result.output and "COMPLETED" in result.output
    assert "volume Dice" in result.output and "★" in result.output
    assert "NaN DETECTED" not in result.output
    # the count is of saves, not of the files listed beside it ("checkpoints (11) last.pt ...; best.pt ...")
    saves = sum('"kind":"checkpoint"' in line.replace(" ", "") for line in (run / "events.jsonl").open())
    assert saves > 2 and f"checkpoints ({saves} saves) last.pt" in result.output


def test_once_exits_1_on_nan_and_names_the_guard_action(tmp_path):
    write_realistic(tmp_path / "runs" / "diverged", nan=True)
    result = CliRunner().invoke(cli_app, ["watch", "diverged", "--once", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert "NaN DETECTED" in result.output and "rollback" in result.output and "abort" in result.output
    assert "NAN_ABORT" in result.output


def test_once_exits_1_on_a_failed_run_and_opens_the_newest_by_default(tmp_path):
    s = two_epoch_run("crashed")
    s.add("run_end", status="failed", message="worker died")
    s.write(tmp_path / "runs" / "crashed" / "events.jsonl")
    result = CliRunner().invoke(cli_app, ["watch", "--once", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert "FAILED" in result.output and "worker died" in result.output


def test_once_before_any_epoch_ended_says_none_finished_not_none_started(tmp_path):
    """A run in its first epoch (no step logged before train.log_every steps) and one stopped by --time-limit
    at step 0 were both "no epoch started yet": the first had started, the second will never go on."""
    s = EventScript("stopped")
    s.start(preset="demo", device="cpu", amp="off", epochs=3)
    s.add("run_end", status="time_limit", message="stopped before the time limit")
    s.write(tmp_path / "runs" / "stopped" / "events.jsonl")
    result = CliRunner().invoke(cli_app, ["watch", "--once", str(tmp_path / "runs" / "stopped")])
    assert result.exit_code == 0, result.output
    assert "no epoch finished\n" in result.output and "started" not in result.output


def test_a_run_without_a_checkpoint_says_none_yet_only_while_it_runs(tmp_path):
    """A run that ended without a checkpoint (failed, stopped at step 0) still said "checkpoints (0 saves) none
    yet", as if one might come; while the run's writer holds its lock one still may."""
    run = tmp_path / "runs" / "crashed"
    s = EventScript("crashed")
    s.start(preset="demo", device="cpu", amp="off", epochs=3)
    s.write(run / "events.jsonl")
    with RunLock(run):
        watcher = RunWatcher(run)
        watcher.poll()
        assert watcher.state.status == "running"
        assert summary_text.info_text(watcher.state).plain == "checkpoints none yet"
    s.add("run_end", status="failed", message="worker died")
    s.write(run / "events.jsonl")
    result = CliRunner().invoke(cli_app, ["watch", "--once", str(run)])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == "checkpoints none: the run ended without saving one"


def once_on_a_terminal(monkeypatch, width: int, *args: str) -> tuple[int, list[str]]:
    """`watch ARGS` printed to a terminal `width` columns wide: (exit code, the lines it shows)."""
    import io

    from rich.console import Console

    import liverctl.commands.watch as watch_command

    screen = io.StringIO()
    monkeypatch.setattr(watch_command, "console", Console(file=screen, width=width, force_terminal=True,
                                                          color_system=None, emoji=False, soft_wrap=True))
    result = CliRunner().invoke(cli_app, ["watch", *args])
    return result.exit_code, screen.getvalue().splitlines()


def test_once_at_40_columns_breaks_lines_between_values_and_lists_each_epoch(tmp_path, monkeypatch):
    """COLUMNS=40: rich squeezed the epochs table to `0… │ 0…` (every value gone) and the header lines ran on
    for the terminal to cut anywhere; now every line fits and no value is cut."""
    run = write_realistic(tmp_path / "runs" / "diverged", nan=True)
    code, lines = once_on_a_terminal(monkeypatch, 40, str(run), "--once")
    assert code == 1 and max(map(len, lines)) <= 40, "\n".join(lines)
    shown = "\n".join(lines)
    assert "…" not in shown.replace("val loss …", "").replace("Dice …", "")  # only the unfinished epoch's
    for words in ("diverged   NAN_ABORT", "device cuda:0", "epochs done 5/6", "44.5 samples/s", "NaN DETECTED",
                  "rollbacks 2", "train loss 0.2188  val loss 0.2407", "vol Dice 0.9262", "best ★",
                  "train loss NaN ×8", "best.pt epoch 5"):
        assert any(words in line for line in lines), words  # each on one line, whole
    assert lines.index("5") < lines.index("6 stopped")  # one block per epoch


def test_once_at_120_columns_keeps_the_table_and_the_lines_that_fit(tmp_path, monkeypatch):
    run = write_realistic(tmp_path / "runs" / "diverged", nan=True)
    code, lines = once_on_a_terminal(monkeypatch, 120, str(run), "--once")
    assert code == 1 and max(map(len, lines)) <= 120, "\n".join(lines)
    assert lines[0].startswith("diverged   NAN_ABORT   preset v5-focal  device cuda:0  amp fp16  GPU 9.2")
    assert lines[1].startswith("━━") and "83%  epochs done 5/6  ETA —  elapsed" in lines[1]
    header = next(line for line in lines if "train loss" in line)
    assert header.split() == "epoch ┃ train loss ┃ val loss ┃ vol Dice ┃ slice Dice ┃ glob Dice ┃ sec ┃ best".split()
    rows = [[cell.strip() for cell in line.split("│")] for line in lines if line.count("│") == 7]
    assert [row[0] for row in rows] == ["1", "2", "3", "4", "5", "6 stopped"] and rows[4][3] == "0.9262"


def test_plot_prints_the_charts_once_and_overlays_several_runs(tmp_path):
    run = write_realistic(tmp_path / "runs" / "diverged", nan=True)
    result = CliRunner().invoke(cli_app, ["watch", str(run), "--plot", "--width", "100", "--height", "14"])
    assert result.exit_code == 1, result.output  # as --once: the run had a NaN
    out = result.output
    assert "\x1b" not in out  # not a terminal: plain text for logs
    for title in ("loss · smoothing 0.6", "Dice per epoch", "learning rate", "samples/s"):
        assert title in out
    assert "A abort" in out and "━━ volume" in out
    write_realistic(tmp_path / "runs" / "clean", nan=False)
    result = CliRunner().invoke(cli_app, ["watch", "clean", "diverged", "--plot", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output  # the first run is the one followed
    assert "━━ clean" in result.output and "━━ diverged" in result.output  # one curve each, in the legend
    assert "▶ clean" in result.output and "(ep 5)" in result.output  # and a table of their best figures


def test_once_prints_each_run_given(tmp_path):
    """`watch r1 r2 --once` printed r1's summary alone, r2 dropped without a word; each is printed now, the exit
    status still the first run's (the one followed, as with --plot)."""
    write_realistic(tmp_path / "runs" / "clean", nan=False)
    write_realistic(tmp_path / "runs" / "diverged", nan=True)
    result = CliRunner().invoke(cli_app, ["watch", "clean", "diverged", "--once", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.index("clean   COMPLETED") < out.index("\n\ndiverged   ") < out.index("NaN DETECTED")
    assert out.count("checkpoints (") == 2


def test_once_heads_an_experiment_fold_with_its_experiment_line(tmp_path):
    """`watch clean cv --once` printed the experiment's line first, above `clean`'s summary, as if `clean` were the
    experiment's fold; each summary is beneath its own line now."""
    from run_fixtures import make_config

    from liverctl.experiment import folder

    write_realistic(tmp_path / "runs" / "clean", nan=False)
    exp = tmp_path / "runs" / "cv"
    write_realistic(exp / "fold-0", nan=False)
    folder.write_summary(exp, {"name": "cv", "preset": "demo", "store": "store/liver.zarr", "folds": [0],
                               "config": make_config("demo"), "status": "interrupted", "message": "fold 0 stopped",
                               "fold_results": {}})
    result = CliRunner().invoke(cli_app, ["watch", "clean", "cv", "--once", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.index("clean   COMPLETED") < out.index("experiment cv interrupted") < out.index("fold-0   ")
    assert out.count("experiment cv ") == 1


@pytest.mark.parametrize("args, given", [(["--once", "--width", "120"], "--width shapes"),
                                          (["--height", "20"], "--height shapes"),
                                          (["--once", "--width", "120", "--height", "20"], "--width and --height shape")])
def test_chart_size_without_plot_is_refused(tmp_path, args, given):
    """`--width` / `--height` without `--plot` were ignored without a word (`watch --once --width 120` printed at
    the terminal's width); one line says what they are for, before any run is looked for."""
    result = CliRunner().invoke(cli_app, ["watch", "nope", *args, "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (f"error: {given} the charts of --plot; add --plot (--once and the live view fit "
                                     "the terminal)")


def test_watch_before_any_run_says_how_to_train_one(tmp_path):
    """`liverctl watch` before any training said "start one with `liverctl train`", which only answers "give
    --preset NAME"; it names the command as `liverctl runs` does."""
    result = CliRunner().invoke(cli_app, ["watch", "--once", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr == (f"error: {tmp_path}/ holds no runs; train one with `liverctl train --preset demo`, or "
                             "give --runs-dir the folder that holds yours\n")


def test_watch_of_a_runs_folder_that_is_not_there_says_so(tmp_path):
    """`liverctl watch` from the wrong folder (no ./runs) or with a mistyped --runs-dir said 'runs: no runs here
    yet', as if the folder were there and empty, where `liverctl runs` and a run name's line say it is missing."""
    missing = tmp_path / "rusn"
    result = CliRunner().invoke(cli_app, ["watch", "--once", "--runs-dir", str(missing)])
    assert result.exit_code == 2
    assert result.stderr == (f"error: there is no folder {missing}/; train one with `liverctl train --preset demo`, "
                             "or give --runs-dir the folder that holds yours\n")


def test_once_missing_run_is_one_line_error_exit_2(tmp_path):
    result = CliRunner().invoke(cli_app, ["watch", "nope", "--once", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "nope" in result.stderr
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli_app, ["watch", str(tmp_path / "empty"), "--once"])
    assert result.exit_code == 2 and "no events.jsonl" in result.stderr
    (tmp_path / "odd" / "events.jsonl").mkdir(parents=True)  # unreadable as a file
    result = CliRunner().invoke(cli_app, ["watch", str(tmp_path / "odd"), "--once"])
    assert result.exit_code == 2 and "cannot read the events file" in result.stderr


def test_once_shows_a_hostile_end_message_as_one_cut_line(tmp_path):
    """run_end's message is anyone's text: a 10 MB one with markup, newlines and ESC was printed whole by
    `watch --once` (10 MB on the terminal, the ESC sequence live, the lines split). Now it is one line, cut
    (`liverctl.printable.one_line`, as `liverctl runs` shows it), markup as written."""
    s = two_epoch_run("crashed")
    s.add("run_end", status="failed", message="[bold red]boom[/] line one\nline two\x1b[31m\r\n" + "y" * 500_000)  # under MAX_LINE_BYTES
    s.write(tmp_path / "runs" / "crashed" / "events.jsonl")
    result = CliRunner().invoke(cli_app, ["watch", "--once", str(tmp_path / "runs" / "crashed")])
    assert result.exit_code == 1
    assert len(result.output) < 20_000 and "\x1b" not in result.output and "\r" not in result.output
    assert "[bold red]boom[/] line one line two [31m yyy" in result.output


def test_once_counts_the_unreadable_lines_as_runs_does(tmp_path):
    """`runs` said "events.jsonl: 2 unreadable lines skipped" of a log that `watch --once` showed as if whole: the
    watcher dropped lines that held no event without a word. Now it counts them (a torn last line, still being
    written, is not one) and says so beneath the epochs, in the words `runs` uses."""
    run = tmp_path / "runs" / "r"
    s = two_epoch_run("r")
    s.write(run / "events.jsonl")
    append(run / "events.jsonl", "{not json\n", "\n", '{"kind": "note", "message": [1, \n', '{"kind":"no')
    result = CliRunner().invoke(cli_app, ["watch", "--once", str(run)])
    assert "events.jsonl: 2 unreadable lines skipped" in result.output, result.output
    runs = CliRunner().invoke(cli_app, ["runs", str(tmp_path / "runs")])
    assert "events.jsonl: 2 unreadable lines skipped" in " ".join(runs.stdout.split())


async def test_app_counts_unreadable_lines_as_they_come(tmp_path, monkeypatch):
    """The TUI says how many lines of the log held no event, beneath the table, from the first read (a long log's
    too, read off the UI thread) and as more come."""
    from liverctl.watch import watcher as watcher_module

    monkeypatch.setattr(watcher_module, "BACKGROUND_READ_BYTES", 100)  # read as a long log is
    run = tmp_path / "runs" / "r"
    two_epoch_run("r").write(run / "events.jsonl")
    append(run / "events.jsonl", "garbage\n")
    app = make_watch_app(run, poll_seconds=POLL_S, clock=FakeClock(1e12))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, lambda: "events.jsonl: 1 unreadable line skipped" in str(app.info.content))
        append(run / "events.jsonl", "\x00\xff\n", "[1, 2]\n")
        await settle(pilot, lambda: "events.jsonl: 3 unreadable lines skipped" in str(app.info.content))


async def test_app_at_80x24_a_banner_of_several_records_keeps_what_the_guard_did(tmp_path):
    """With two or more NaN records each has one line at 80 columns, and the trainer's message begins by saying
    what was non-finite and at which step, which the line says already: `latest: loss · step 1475 · abort ·
    non-finite loss at step 1475; 1 rollbacks di…` lost what the guard did. Now that repeated part is left out (the
    wide banner and --once too), and the rest fits."""
    s = two_epoch_run("n")
    s.add("nan", epoch=2, step=1350, where="loss", action="skip_step", counts={"skipped": 1, "rollbacks": 0},
          message="non-finite loss at step 1350")
    s.add("nan", epoch=2, step=1475, where="loss", action="abort", counts={"skipped": 1, "rollbacks": 2},
          message="non-finite loss at step 1475; 1 rollbacks did not help, stopping")
    run = tmp_path / "runs" / "n"
    s.write(run / "events.jsonl")
    app = make_watch_app(run, poll_seconds=3600.0, clock=FakeClock(s.t))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, lambda: app.banner.display)
        await pilot.pause()
        head, first, latest = painted(app.banner)
        assert head.endswith("[d: dismiss]") and all(len(line) <= 80 for line in (head, first, latest))
        assert re.fullmatch(r" first:  loss · epoch 3/3, step 1350, at [\d:]{8} · guard: skip_step", first), first
        assert latest.startswith(" latest: loss · ") and "step 1475" in latest, latest
        assert latest.endswith("abort · 1 rollbacks did not help, stopping"), latest
    assert re.search(r"\nlatest: loss · epoch 3/3, step 1475, at [\d:]{8} · guard: abort · 1 rollbacks did not help, "
                     r"stopping$", nan_banner_text(app.watcher.state))


def test_watch_off_a_terminal_prints_the_summary_once_instead_of_drawing_the_live_view(tmp_path, monkeypatch):
    """`liverctl watch r > log` in CI, or `!liverctl watch` in a notebook cell: the live view drew its screen as
    escape codes into the log (45 KB in 10 s) and never ended. Without a terminal it is `--once`, with a note."""
    import io
    import sys

    from liverctl.watch.app import WatchApp

    write_realistic(tmp_path / "runs" / "r", nan=False)
    monkeypatch.setattr(sys, "__stdin__", io.StringIO())
    monkeypatch.setattr(WatchApp, "run", lambda self: pytest.fail("the live view started without a terminal"))
    result = CliRunner().invoke(cli_app, ["watch", "r", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("r ") and "COMPLETED" in result.stdout
    assert result.stderr.startswith("note: not on a terminal")


def test_a_long_log_is_folded_in_batches_never_all_its_events_at_once(tmp_path):
    """`watch --once` (and the first poll of a short-lived app) parsed a whole log into dicts before folding any:
    a 150k-step log peaked at 338 MB of RSS for 57 MB of folded state. It is folded in batches of
    READ_BATCH_LINES lines, as the app's background read folds it, so the peak is the lines, the state and a batch."""
    import tracemalloc

    from liverctl.watch.watcher import READ_BATCH_LINES

    s = EventScript("long")
    (tmp_path / "long").mkdir()
    with open(tmp_path / "long" / "events.jsonl", "w") as fh:
        fh.write(s.start(preset="demo", epochs=1))
        for step in range(1, 8 * READ_BATCH_LINES):
            fh.write(event_line("step", step, s.t + step, run="long", epoch=0, step=step, loss=0.5, lr=1e-3,
                                samples_per_s=10.0, grad_norm=0.5))
    watcher = RunWatcher(tmp_path / "long")
    tracemalloc.start()
    try:
        assert watcher.poll() == 8 * READ_BATCH_LINES
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(watcher.state.samples) == 8 * READ_BATCH_LINES - 1
    assert peak < 3 * held  # before: every event's dict at once, about 5x

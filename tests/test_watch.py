"""`liverctl watch`: the state folded from events, the headless app, and `--once` (hand-written logs)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner
from watch_fixtures import EventScript, realistic_run

from liverctl.cli import app as cli_app
from liverctl.errors import LiverctlError
from liverctl.events import EventWriter, read_events
from liverctl.watch.app import make_watch_app
from liverctl.watch.locate import find_run
from liverctl.watch.state import RunState, RunWatcher
from liverctl.watch.summary import exit_code, nan_banner_text
from liverctl.watch.widgets import BlockChart, EpochTable, NanBanner, RunHeader, bin_points, chart_lines

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


def test_stalled_after_three_usual_epochs_of_silence():
    s = two_epoch_run()  # epochs of 60 s: stalled after max(120 s, 3 x 60 s) = 180 s
    clock = FakeClock(s.t + 100)
    state = RunState(clock=clock)
    state.feed(json.loads(line) for line in s.lines)
    assert state.status == "running"
    clock.t = s.t + 200
    assert state.status == "stalled"
    s.add("step", after=200, step=20, epoch=2, loss=0.5)  # the run speaks again
    state.feed([json.loads(s.lines[-1])])
    assert state.status == "running"


def test_stalled_before_the_first_epoch_uses_step_gaps_with_a_floor():
    s = EventScript("r")
    s.start()
    for k in range(4):
        s.add("step", after=10, step=k, epoch=0, loss=1.0)
    clock = FakeClock(s.t + 250)
    state = RunState(clock=clock)
    state.feed(json.loads(line) for line in s.lines)
    assert state.status == "running"  # 3 x 10 s is far below the 300 s floor
    clock.t = s.t + 400
    assert state.status == "stalled"


def test_eta_counts_epochs_left_less_the_current_epoch():
    s = EventScript("r")
    s.start(epochs=4)
    s.epoch(0, seconds=100, epochs=4)
    clock = FakeClock(s.t + 30)
    state = RunState(clock=clock)
    state.feed(json.loads(line) for line in s.lines)
    assert state.eta_s() == pytest.approx(3 * 100 - 30)


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


# ---- charts --------------------------------------------------------------------------------------------


def test_chart_bins_keep_non_finite_points_visible():
    assert bin_points([1.0, 2.0, None, 4.0], 2) == [1.5, None]
    lines = chart_lines([0.0, 1.0, None], width=9, height=2)
    assert len(lines) == 2 and all("×" in line.plain for line in lines)
    assert lines[0].plain.startswith("   ███")  # the highest bar fills both rows, the lowest only a sliver


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
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one(EpochTable)
        await settle(pilot, lambda: table.row_count == 1)
        assert "RUNNING" in header_plain(app)
        assert not app.query_one(NanBanner).display
        append(run / "events.jsonl", *s.lines[4:])
        await settle(pilot, lambda: table.row_count == 2)
        assert "★" in str(table.get_row("1")[-1])
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
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, lambda: "RUNNING" in header_plain(app))
        clock.t += 1000
        await settle(pilot, lambda: "STALLED" in header_plain(app))


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
        assert app.query_one("#loss-chart", BlockChart).n_nan == 1
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


async def test_app_nan_banner_after_a_null_value(tmp_path):
    run = tmp_path / "r1"
    s = two_epoch_run()
    s.write(run / "events.jsonl")
    app = make_watch_app(run, poll_seconds=POLL_S, clock=FakeClock(s.t))
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one(EpochTable)
        await settle(pilot, lambda: table.row_count == 2)
        append(run / "events.jsonl", s.epoch(2, seconds=60, train_loss=None, volume_dice=0.5))
        await settle(pilot, lambda: app.query_one(NanBanner).display)
        assert "train_loss" in str(app.query_one(NanBanner).content)
        assert table.row_count == 3
        assert str(table.get_row("2")[1]) == "NaN"


async def test_app_copes_with_torn_lines_unknown_kinds_missing_file_and_deletion(tmp_path):
    run = tmp_path / "r1"
    run.mkdir()
    s = two_epoch_run()
    app = make_watch_app(run, poll_seconds=POLL_S, clock=FakeClock(s.t))
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
        assert app.is_running and table.row_count == 1


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

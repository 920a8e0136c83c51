"""`liverctl.runs.summary`, `liverctl.runs.table` and the `liverctl runs` command, on hand-made run folders (tests/run_fixtures.py)."""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import re
import subprocess
import sys

import pytest
import tomli_w
import tomllib
from run_fixtures import make_config, make_run
from typer.testing import CliRunner

from liverctl.cli import app
from liverctl.errors import LiverctlError
from liverctl.runs.folder import RunLock
from liverctl.runs.summary import flatten_config, scan_runs, summarize_run
from liverctl.runs.table import filter_runs, sort_runs, summary_row, varied_settings


@pytest.fixture
def three_runs(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "a-v3", preset="v3", start_ts=1_700_000_000, planned=3)
    make_run(root, "b-v5", preset="v5", settings={"loss.name": "log_cosh_dice"}, start_ts=1_700_001_000,
             planned=3, volume_dice=[0.6, 0.93, 0.91],
             submissions=[{"csv": "subs/b.csv", "scores": {"volume_dice": 0.95, "global_dice": 0.96}},
                          {"csv": "subs/b2.csv"}])
    make_run(root, "c-focal", preset="v5-focal", settings={"loss.name": "dice_focal"}, start_ts=1_700_002_000,
             planned=15, volume_dice=[0.4, None], status="nan_abort", nan_events=2)
    return root


def test_scan_lists_newest_first_with_status_epochs_and_best_dice(three_runs):
    runs = scan_runs(three_runs)
    assert [r.name for r in runs] == ["c-focal", "b-v5", "a-v3"]
    focal, v5, v3 = runs
    assert (v3.status, v5.status, focal.status) == ("completed", "completed", "nan_abort")
    assert (focal.epochs_done, focal.epochs_planned) == (2, 15)
    # two skipped steps plus the rollback after the non-finite validation
    assert focal.nan_events == 3
    assert focal.volume_dice == pytest.approx(0.4)  # the null epoch never counts as best
    assert v5.best_epoch == 2  # epochs completed, as the trainer numbers them
    assert v5.volume_dice == pytest.approx(0.93)
    assert v5.slice_dice == pytest.approx(0.98)
    assert v5.global_dice == pytest.approx(0.95)
    assert v3.wall_seconds == pytest.approx(3 * 60 + 1)
    assert v5.best_submitted == pytest.approx(0.95)
    assert [s["volume_dice"] for s in v5.submissions] == [pytest.approx(0.95), None]
    assert v3.problems == [] and v5.problems == [] and focal.problems == []


def test_varied_settings_keeps_only_keys_that_differ(three_runs):
    runs = scan_runs(three_runs)
    varied = varied_settings(runs)
    assert "loss.name" in varied and "train.epochs" in varied
    assert "model.arch" not in varied and "data.window" not in varied
    # among the two runs with the same loss and epochs nothing else differs
    assert varied_settings([r for r in runs if r.preset in ("v3",)]) == []
    assert "loss.name" not in varied_settings([r for r in runs if r.name != "b-v5" and r.name != "c-focal"])


def test_varied_settings_counts_a_missing_key_and_ignores_descriptions(tmp_path):
    make_run(tmp_path, "x", settings={"train.clip": 1.0, "model.description": "one"})
    make_run(tmp_path, "y", settings={"model.description": "two"})
    runs = scan_runs(tmp_path)
    assert varied_settings(runs) == ["train.clip"]


def test_flatten_config_dots_sections_and_makes_lists_comparable():
    flat = flatten_config({"data": {"window": [-100, 200], "aug": {"rotate": 10}}, "seed": 1})
    assert flat == {"data.window": (-100, 200), "data.aug.rotate": 10, "seed": 1}


def test_killed_run_with_torn_log_and_no_checkpoint_is_listed_with_its_problems(tmp_path):
    run = make_run(tmp_path, "killed", status=None, truncated=True, checkpoint=False, planned=4)
    summary = summarize_run(run)
    assert summary.status == "interrupted"
    assert summary.epochs_done == 3  # the fourth epoch_end is the torn last line
    assert any("no checkpoint" in p for p in summary.problems)
    assert any("half-written last line" in p for p in summary.problems)


def test_a_run_is_running_while_its_lock_is_held_whatever_the_clock(tmp_path):
    run = make_run(tmp_path, "live", status=None, start_ts=1_700_000_000)
    with RunLock(run):
        assert summarize_run(run).status == "running"  # silent for years, still held: running
    assert summarize_run(run).status == "interrupted"  # written a moment ago, but nobody holds the lock


@pytest.mark.parametrize(
    ("version", "words"),
    [(None, "without a schema version"), (0, "older than v1"), (7, "newer than this liverctl")],
)
def test_other_schema_versions_are_read_and_named(tmp_path, version, words):
    run = make_run(tmp_path, "r", schema_version=version, planned=2)
    summary = summarize_run(run)
    assert summary.status == "completed" and summary.epochs_done == 2
    assert any(words in p for p in summary.problems), summary.problems


def test_unknown_checkpoint_format_is_named(tmp_path):
    run = make_run(tmp_path, "r")
    sidecar = json.loads((run / "checkpoints" / "last.json").read_text(encoding="utf-8"))
    sidecar["format"] = "liverctl-checkpoint/9"
    (run / "checkpoints" / "last.json").write_text(json.dumps(sidecar), encoding="utf-8")
    summary = summarize_run(run)
    assert summary.problems == [
        "checkpoints/last.json has format 'liverctl-checkpoint/9', not 'liverctl-checkpoint/1'; read as best we can"
    ]


def test_missing_config_falls_back_to_the_run_start_event(tmp_path):
    run = make_run(tmp_path, "r", config_file=False, settings={"loss.name": "tversky"})
    summary = summarize_run(run)
    assert summary.settings["loss.name"] == "tversky"
    assert any("config.toml missing" in p for p in summary.problems)


def test_broken_files_become_problems_not_exceptions(tmp_path):
    run = make_run(tmp_path, "r")
    (run / "config.toml").write_text("[data\nbroken", encoding="utf-8")
    (run / "checkpoints" / "best.json").write_text("{not json", encoding="utf-8")
    with open(run / "events.jsonl", "a", encoding="utf-8") as fh:
        fh.write("garbage line\n")
    (run / "submissions.jsonl").write_text("[1, 2]\n" * 300, encoding="utf-8")
    summary = summarize_run(run)
    text = " | ".join(summary.problems)
    for words in ("config.toml unreadable", "best.json unreadable", "1 unreadable line",
                  "submissions.jsonl: 300 unreadable lines skipped"):
        assert words in text
    assert sum("submissions.jsonl" in p for p in summary.problems) == 1  # counted, not a problem per line


def test_resumed_run_sums_its_segments_and_takes_the_last_status(tmp_path):
    run = make_run(tmp_path, "r", status="interrupted", planned=2, start_ts=1_000.0, epoch_seconds=100.0)
    resume_at = 50_000.0  # a long pause between the two sessions must not count as wall time
    lines = [
        {"v": 1, "ts": resume_at, "seq": 100, "run": "r", "kind": "run_start", "epoch": None, "step": None,
         "preset": "demo", "resumed_from": "checkpoints/last.pt"},
        {"v": 1, "ts": resume_at + 30, "seq": 101, "run": "r", "kind": "step", "epoch": 2, "step": 9,
         "loss": 0.1, "lr": 1e-5},
    ]
    with open(run / "events.jsonl", "a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines))
    summary = summarize_run(run)
    assert summary.status == "interrupted"  # the first session's run_end no longer speaks for the run
    assert any("no run_end" in p for p in summary.problems)
    assert summary.wall_seconds == pytest.approx(2 * 100 + 1 + 30)


def test_no_runs_and_missing_folder_raise_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(LiverctlError, match=f"^{tmp_path}/ holds no runs; train one"):
        scan_runs(tmp_path)
    monkeypatch.chdir(tmp_path)  # `liverctl runs` before any training ('no run 'runs' (looked for ... runs/runs)')
    with pytest.raises(LiverctlError, match=r"^there is no folder runs/; train one with `liverctl train --preset "
                                            r"demo`, or give --runs-dir the folder that holds yours$"):
        scan_runs("runs")
    (tmp_path / "runs").mkdir()  # a name is looked up where there is a runs folder to look it up in
    with pytest.raises(LiverctlError, match=r"^no run '\S+absent' \(looked for the folder \S+absent\); "):
        scan_runs(tmp_path / "absent")


def test_a_run_name_given_as_runs_dir_is_refused_with_the_folder_that_lists_it(three_runs, monkeypatch):
    """'liverctl runs b-v5' (a name, as watch and report take one) said 'no such folder; train a run first', of a
    run that is there under runs/."""
    monkeypatch.chdir(three_runs.parent)
    result = CliRunner().invoke(app, ["runs", "b-v5"])
    assert result.exit_code != 0
    assert "'b-v5' is a run in 'runs'" in result.output and "`liverctl runs runs/b-v5`" in result.output
    assert "train a run first" not in result.output
    (three_runs / "cv").mkdir()
    (three_runs / "cv" / "experiment.json").write_text("{}", encoding="utf-8")
    with pytest.raises(LiverctlError, match=r"'cv' is an experiment in 'runs'.*`liverctl runs runs/cv`"):
        scan_runs("cv")
    with pytest.raises(LiverctlError, match=r"^no run 'absent' \(looked for the folders absent and runs/absent\); "
                                            r"the runs in runs/, newest first: 'cv', "):
        scan_runs("absent")


def test_filter_and_sort(three_runs):
    runs = scan_runs(three_runs)
    assert [r.name for r in filter_runs(runs, ["preset=v5*"])] == ["c-focal", "b-v5"]
    assert [r.name for r in filter_runs(runs, ["status=completed", "volume_dice>=0.92"])] == ["b-v5"]
    assert [r.name for r in filter_runs(runs, ["loss.name!=0.5*bce*"])] == ["c-focal", "b-v5"]
    assert [r.name for r in sort_runs(runs, "volume_dice")] == ["b-v5", "a-v3", "c-focal"]
    assert [r.name for r in sort_runs(runs, "name")] == ["a-v3", "b-v5", "c-focal"]
    assert [r.name for r in sort_runs(runs, "name", reverse=True)] == ["c-focal", "b-v5", "a-v3"]
    assert [r.name for r in sort_runs(runs, "submitted")][0] == "b-v5"
    with pytest.raises(LiverctlError, match="unknown column"):
        filter_runs(runs, ["colour=red"])
    with pytest.raises(LiverctlError, match="needs a number"):
        filter_runs(runs, ["volume_dice>=high"])
    with pytest.raises(LiverctlError, match="unknown column"):
        sort_runs(runs, "colour")


def test_experiments_sort_and_filter_by_their_mean_per_fold_best_volume_dice(three_runs):
    """The `folds: best vol` column (an experiment's cross-validation figure, the one to compare experiments by)
    could be neither sorted nor filtered by: 'runs --sort cv_mean' was an unknown column, though --json has it."""
    from liverctl.experiment import folder

    for name, mean in (("cv-low", 0.80), ("cv-high", 0.90)):
        (three_runs / name).mkdir()
        folder.write_summary(three_runs / name, {
            "name": name, "preset": "demo", "store": "store/liver.zarr", "folds": [0, 1], "config": make_config("demo"),
            "status": "completed", "fold_results": {}, "cv": {"folds": {"0": mean - 0.01, "1": mean + 0.01},
                                                               "mean": mean, "std": 0.01}})
    runs = scan_runs(three_runs)
    assert [r.name for r in sort_runs(runs, "cv_mean")][:2] == ["cv-high", "cv-low"]  # plain runs, without one, last
    assert [r.name for r in filter_runs(runs, ["cv_mean>=0.85"])] == ["cv-high"]
    result = CliRunner().invoke(app, ["runs", str(three_runs), "--sort", "cv_mean", "--reverse", "--json"])
    assert result.exit_code == 0, result.output
    assert [row["name"] for row in json.loads(result.output)][:2] == ["cv-low", "cv-high"]


def test_a_filter_applies_to_an_experiments_fold_runs_as_rows_of_their_own(three_runs):
    """`runs --filter data.fold=1` dropped every experiment (its own row has no data.fold) with its fold 1;
    `--filter volume_dice>=0.92` dropped one whose pooled figure is 0.91 with its fold 0 at 0.95, and a filter the
    experiment matched (`cv_mean>0.8`) kept all its fold rows, matching or not. A fold run is now listed beneath
    its experiment when it matches; an experiment when it or one of its folds does."""
    from liverctl.experiment import folder

    exp = three_runs / "cv"
    exp.mkdir()
    folder.write_summary(exp, {"name": "cv", "preset": "demo", "store": "store/liver.zarr", "folds": [0, 1],
                               "config": make_config("demo"), "status": "completed", "fold_results": {},
                               "oof": {"volume_dice": 0.91}, "cv": {"folds": {"0": 0.95, "1": 0.85}, "mean": 0.9}})
    for fold, best in ((0, 0.95), (1, 0.85)):
        make_run(exp, f"fold-{fold}", settings={"data.fold": fold}, volume_dice=[0.5, best])
    runs = scan_runs(three_runs)

    def listed(*filters):
        return [(s.name, [f.name for f in s.folds]) for s in filter_runs(runs, list(filters))]

    assert listed("data.fold=1") == [("cv", ["fold-1"])]  # the plain runs are of fold 0
    assert listed("data.fold=0", "preset=v5*") == [("c-focal", []), ("b-v5", [])]
    assert listed("volume_dice>=0.92") == [("b-v5", []), ("cv", ["fold-0"])]
    assert listed("cv_mean>0.8") == [("cv", [])]  # the experiment matches; its folds have no cv_mean
    assert listed("preset=demo") == [("cv", ["fold-0", "fold-1"])]
    assert listed("volume_dice>0.99") == []
    result = CliRunner().invoke(app, ["runs", str(three_runs), "--filter", "data.fold=1", "--json"])
    assert result.exit_code == 0, result.output
    assert [(row["name"], [f["name"] for f in row["folds"]]) for row in json.loads(result.output)] == [("cv", ["fold-1"])]
    result = CliRunner().invoke(app, ["runs", str(three_runs), "--filter", "data.fold=1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "a fold run is listed, beneath its experiment, when it matches" in " ".join(result.output.split())
    assert "cv/fold-1" in result.output and "cv/fold-0" not in result.output
    help_text = " ".join(CliRunner().invoke(app, ["runs", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "a fold run is listed, beneath its experiment, when it matches" in help_text


def test_the_legend_says_what_the_count_after_a_submitted_score_is(three_runs):
    """b-v5's submitted cell '0.9500 (2)' (the best of its 2 submissions) was explained nowhere; the legend
    explained only '(ens N)', and the experiments' folds column's '(5)' counts folds."""
    result = CliRunner().invoke(app, ["runs", str(three_runs)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "0.9500 (2)" in result.output
    assert "(N) after it: the best of N submissions" in " ".join(result.output.split())


def test_an_unknown_column_suggests_the_nearest_and_lists_the_columns_not_every_setting(three_runs):
    """`runs --sort volume` listed 60 names, every setting of every run among them, and not the one meant."""
    runs = scan_runs(three_runs)
    columns = ("; columns: name, preset, status, nan, epochs, best_epoch, volume_dice, slice_dice, global_dice, wall, "
               "submitted, started, cv_mean, or a setting of the runs' config as section.key (e.g. optim.lr)")
    with pytest.raises(LiverctlError) as info:
        sort_runs(runs, "volume")
    assert str(info.value) == "unknown column 'volume' to sort by (did you mean 'volume_dice'?)" + columns
    with pytest.raises(LiverctlError) as info:
        filter_runs(runs, ["optim.lrr>1"])
    assert str(info.value) == "filter 'optim.lrr>1': unknown column 'optim.lrr' (did you mean 'optim.lr'?)" + columns
    with pytest.raises(LiverctlError) as info:
        sort_runs(runs, "zzz")
    assert str(info.value) == "unknown column 'zzz' to sort by" + columns


def test_command_prints_the_table_with_varied_settings_and_problems(three_runs):
    make_run(three_runs, "d-killed", status=None, truncated=True, checkpoint=False, start_ts=1_600_000_000)
    result = CliRunner().invoke(app, ["runs", str(three_runs)])
    assert result.exit_code == 0, result.output
    out = result.output
    for words in ("a-v3", "b-v5", "c-focal", "d-killed", "loss.name", "log_cosh_dice", "nan_abort", "2/15",
                  "0.9300", "0.9500", "1 run with something missing", "no checkpoint"):
        assert words in out
    assert "model.arch" not in out
    assert out.index("c-focal") < out.index("b-v5") < out.index("a-v3")


def test_runs_takes_runs_dir_as_every_other_command_does(three_runs, tmp_path):
    """`train --runs-dir D`, `watch --runs-dir D`, `submit --runs-dir D`, then `runs --runs-dir D`: 'No such option:
    --runs-dir' (only `runs D` worked). Both spellings now list D; two different folders are refused."""
    by_option = CliRunner().invoke(app, ["runs", "--runs-dir", str(three_runs), "--json"])
    assert by_option.exit_code == 0, by_option.output
    assert [r["name"] for r in json.loads(by_option.stdout)] == ["c-focal", "b-v5", "a-v3"]
    both = CliRunner().invoke(app, ["runs", str(three_runs), "--runs-dir", str(tmp_path)])
    assert both.exit_code == 2
    assert both.stderr.strip() == (f"error: two run folders given: {three_runs} and --runs-dir {tmp_path}; "
                                   "give one")


def runs_on_a_terminal(monkeypatch, runs_dir, width: int) -> str:
    """What `liverctl runs RUNS_DIR` shows on a terminal `width` columns wide (no colour)."""
    from rich.console import Console

    import liverctl.commands.runs as runs_command

    screen = io.StringIO()
    monkeypatch.setattr(runs_command, "console", Console(file=screen, width=width, force_terminal=True,
                                                         color_system=None, emoji=False))
    result = CliRunner().invoke(app, ["runs", str(runs_dir)])
    assert result.exit_code == 0, result.output
    return screen.getvalue()


def test_a_terminal_narrower_than_the_table_gets_every_value_as_a_list(three_runs, monkeypatch):
    """COLUMNS=40 in a terminal: rich squeezed the status, epochs and Dice columns to nothing (the values were
    gone); each run is a block of `header value` pairs instead, no line wider than the terminal."""
    shown = runs_on_a_terminal(monkeypatch, three_runs, 40)
    lines = shown.splitlines()
    assert "c-focal" in lines and "b-v5" in lines and "a-v3" in lines
    assert re.search(r"\bNaN [1-9]", shown)  # its NaN events
    for words in ("status nan_abort", "epochs 2/15", "vol Dice 0.9300", "submitted 0.9500",
                  "loss.name log_cosh_dice"):
        assert words in shown, words
    legend_start = next(i for i, line in enumerate(lines) if line.startswith("Dice at the best epoch"))
    assert all(len(line) <= 40 for line in lines[:legend_start])


def test_command_json_and_csv(three_runs):
    runner = CliRunner()
    result = runner.invoke(app, ["runs", str(three_runs), "--json", "--filter", "preset=v5*"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == ["c-focal", "b-v5"]
    assert rows[1]["loss.name"] == "log_cosh_dice" and rows[1]["submitted"] == pytest.approx(0.95)
    result = runner.invoke(app, ["runs", str(three_runs), "--csv", "--sort", "volume_dice"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["name"] for r in rows] == ["b-v5", "a-v3", "c-focal"]
    assert {"status", "volume_dice", "slice_dice", "global_dice", "loss.name", "problems"} <= set(rows[0])


def test_json_and_csv_rows_of_a_config_with_dates_and_nan_are_strict_json(tmp_path):
    """A config.toml is anyone's file and TOML has dates, times, nan and inf: `runs --json` failed on a date in a
    TypeError traceback and printed NaN, which no strict JSON reader takes (scripts/fuzz_readers.py config)."""
    a, _ = make_run(tmp_path, "a"), make_run(tmp_path, "b")
    cfg = tomllib.loads((a / "config.toml").read_text())
    cfg["loss"]["focal_gamma"], cfg["optim"]["lr"] = datetime.date(1979, 5, 27), math.nan
    cfg["data"]["window"] = [-math.inf, datetime.time(7, 32)]
    (a / "config.toml").write_text(tomli_w.dumps(cfg))

    def refuse(name):
        raise ValueError(name)

    result = CliRunner().invoke(app, ["runs", str(tmp_path), "--json"])
    assert result.exit_code == 0 and result.exception is None, result.output
    row = next(r for r in json.loads(result.stdout, parse_constant=refuse) if r["name"] == "a")
    assert (row["loss.focal_gamma"], row["optim.lr"], row["data.window"]) == ("1979-05-27", None, [None, "07:32:00"])
    result = CliRunner().invoke(app, ["runs", str(tmp_path), "--csv"])
    assert result.exit_code == 0 and result.exception is None, result.output
    row = next(r for r in csv.DictReader(io.StringIO(result.stdout)) if r["name"] == "a")
    assert (row["loss.focal_gamma"], row["data.window"]) == ("1979-05-27", '[null, "07:32:00"]')


def test_command_errors_are_one_line_with_nonzero_exit(tmp_path):
    runner = CliRunner()
    for args in (["runs", str(tmp_path)], ["runs", str(tmp_path / "absent")]):
        result = runner.invoke(app, args)
        assert result.exit_code != 0
        assert "Traceback" not in result.output
        assert result.stderr.strip().startswith("error:")
    make_run(tmp_path, "r")
    result = runner.invoke(app, ["runs", str(tmp_path), "--sort", "colour"])
    assert result.exit_code != 0 and "unknown column" in result.stderr


def test_listing_runs_never_imports_torch_or_numpy():
    code = (
        "import sys, liverctl.runs.table, liverctl.commands.runs\n"
        "heavy = [m for m in ('torch', 'numpy', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_submission_scores_are_matched_to_their_csv(tmp_path):
    import os

    from liverctl.infer.evaluate import scores_path

    root = tmp_path / "runs"
    run = make_run(root, "r", start_ts=1_700_000_000,
                   submissions=[{"csv": "subs/a.csv", "scores": {"volume_dice": 0.9}},
                                {"csv": "subs/b.csv", "scores": {"volume_dice": 0.97}},
                                {"csv": "subs/c.csv", "scores": {"volume_dice": 0.99}}])
    os.utime(scores_path(tmp_path / "subs" / "b.csv"), (1_600_000_000, 1_600_000_000))  # scored before it existed
    (tmp_path / "subs" / "c.csv").unlink()
    summary = summarize_run(run)
    assert [s["volume_dice"] for s in summary.submissions] == [pytest.approx(0.9), None, None]
    assert summary.best_submitted == pytest.approx(0.9)
    text = " | ".join(summary.problems)
    assert "b.scores.json predates the submission" in text and "c.csv no longer exists" in text


def test_a_dice_outside_0_1_in_a_log_or_scores_file_is_no_figure(tmp_path):
    """A scores.json edited to volume_dice 1e308 showed as the run's best submission (a 309-digit number
    in the `submitted` column), and an epoch logged with Dice 7 was the run's best epoch."""
    root = tmp_path / "runs"
    run = make_run(root, "r", volume_dice=[0.5, 7.0, 0.6],
                   submissions=[{"csv": "subs/a.csv", "scores": {"volume_dice": 1e308, "slice_dice": -0.5}},
                                {"csv": "subs/b.csv", "scores": {"volume_dice": 0.8}}])
    summary = summarize_run(run)
    assert [s["volume_dice"] for s in summary.submissions] == [None, pytest.approx(0.8)]
    assert summary.submissions[0]["slice_dice"] is None
    assert summary.best_submitted == pytest.approx(0.8)
    # the log marks epoch 2 best (is_best, as the trainer does); of the marked epochs, the last with a Dice
    assert summary.best_epoch == 1 and summary.volume_dice == pytest.approx(0.5)


def test_scores_of_a_later_file_of_the_same_name_are_not_a_runs(tmp_path):
    # run a wrote subs/s.csv, run b wrote it again, and `evaluate` scored b's file: a was never scored
    root = tmp_path / "runs"
    a = make_run(root, "a", start_ts=1_700_000_000,
                 submissions=[{"csv": "subs/s.csv", "scores": {"volume_dice": 0.9, "sha256": "1" * 64}}])
    b = make_run(root, "b", start_ts=1_700_000_000,
                 submissions=[{"csv": "subs/o.csv", "scores": {"volume_dice": 0.8, "sha256": "0" * 64}}])
    summary = summarize_run(a)
    assert summary.submissions[0]["volume_dice"] is None and summary.best_submitted is None
    assert "s.scores.json scores a later file of that name" in " | ".join(summary.problems)
    assert summarize_run(b).best_submitted == pytest.approx(0.8)  # the record's sha256 (the fixture's) matches


def test_a_run_in_its_first_epoch_is_not_missing_a_checkpoint_yet(tmp_path):
    run = make_run(tmp_path, "young", status=None, volume_dice=[], checkpoint=False)
    with RunLock(run):
        summary = summarize_run(run)
    assert summary.status == "running" and summary.epochs_done == 0
    assert summary.problems == []


def test_settings_that_cannot_change_results_are_not_columns(tmp_path):
    make_run(tmp_path, "a", settings={"train.log_every": 5, "data.num_workers": 0, "infer.batch_size": 4})
    make_run(tmp_path, "b", settings={"train.log_every": 50, "data.num_workers": 2, "optim.lr": 3e-4})
    assert varied_settings(scan_runs(tmp_path)) == ["optim.lr"]


def test_one_deeply_nested_line_is_a_problem_of_its_run_only(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "good", start_ts=1_700_000_000)
    bad = make_run(root, "bad", start_ts=1_700_001_000)
    with open(bad / "events.jsonl", "a", encoding="utf-8") as fh:  # RecursionError for every run before
        fh.write('{"kind":"note","x":' + "[" * 100_000 + "]" * 100_000 + "}\n")
        fh.write('{"kind":"epoch_end","epoch":' + "9" * 5000 + "}\n")
        fh.write('{"kind":"epoch_end","ts":1e999,"epoch":9}\n')
    summaries = {s.name: s for s in scan_runs(root)}
    assert summaries["good"].problems == []
    assert summaries["bad"].status == "completed" and summaries["bad"].epochs_done == 3
    assert "events.jsonl: 3 unreadable lines skipped" in summaries["bad"].problems
    result = CliRunner().invoke(app, ["runs", str(root)])
    assert result.exit_code == 0, result.output
    assert "good" in result.output and "bad: events.jsonl: 3 unreadable lines skipped" in result.output


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"\xff\xfe\x00\x01garbage\x00", "config.toml unreadable"),
        (b"x = " + b"[" * 5000 + b"]" * 5000, "config.toml unreadable (RecursionError)"),
        (b"x = " + b"9" * 5000, "config.toml unreadable (ValueError)"),
    ],
)
def test_a_garbage_config_toml_is_a_problem_not_an_exception(tmp_path, content, fragment):
    run = make_run(tmp_path, "r")
    (run / "config.toml").write_bytes(content)
    summary = summarize_run(run)
    assert any(p.startswith(fragment) for p in summary.problems), summary.problems
    assert summary.preset == "demo"  # settings still come from the event log


def test_a_config_toml_of_tables_thousands_deep_is_read_without_recursion(tmp_path):
    """`[a0.a1. ... .a2999]` is valid TOML that tomllib reads; flattening it for the runs table recursed
    per table: `runs` showed the run as 'could not be read (RecursionError ...)' and `report` was a traceback."""
    run = make_run(tmp_path, "r")
    with open(run / "config.toml", "a") as fh:
        fh.write("\n[" + ".".join(f"a{i}" for i in range(3000)) + "]\nx = 1\n")
    summary = summarize_run(run)
    assert summary.problems == [] and summary.preset == "demo"
    deep = [k for k in summary.settings if k.startswith("a0.")]
    assert deep == [".".join(f"a{i}" for i in range(3000)) + ".x"] and summary.settings[deep[0]] == 1
    assert flatten_config({"a": {}, "b": {"c": [1], "d": {"e": 2}}, "f": 3}) == {"b.c": (1,), "b.d.e": 2, "f": 3}


def test_odd_values_in_config_sidecars_and_submissions_are_problems(tmp_path):
    run = make_run(tmp_path, "r")
    (run / "config.toml").write_text(f"[optim]\nlr = {10**400}\n[data]\nname = 'x[b]y'\n", encoding="utf-8")
    (run / "checkpoints" / "best.json").write_text('{"metrics":' + "[" * 5000 + "]" * 5000 + "}")
    (run / "submissions.jsonl").write_text(json.dumps({"csv": "a\0b.csv"}) + "\n" + json.dumps({"csv": "/" + "x" * 5000})
                                           + "\n", encoding="utf-8")
    summary = summarize_run(run)
    text = " | ".join(summary.problems)
    assert "best.json unreadable (not a JSON object)" in text and "no longer exists" in text
    assert filter_runs([summary], ["optim.lr>1"]) == [] and filter_runs([summary], ["optim.lr=5"]) == []
    other = make_run(tmp_path, "s")
    assert [s.name for s in sort_runs([summary, summarize_run(other)], "optim.lr")] == ["r", "s"]


def _fuzz_run_files(rng, run):
    """Damage a run folder at random: events lines, config.toml, sidecars, submissions.jsonl."""
    import numpy as np

    odd = [b"[" * 3000, b"9" * 5000, b"\xff\xfe\x00", b"1e999", b'{"ts":-1}', b"\r\n", b"NaN", b'"\\ud800"',
           b'{"kind":"run_end","status":[1]}', b'{"kind":"epoch_end","epochs":' + b"9" * 30 + b"}",
           b'{"kind":"epoch_end","volume_dice":"x","epoch":2}', b'{"csv":5}', b'{"metrics":{"volume_dice":1e400}}']
    for name in ("events.jsonl", "config.toml", "checkpoints/best.json", "checkpoints/last.json",
                 "submissions.jsonl"):
        path = run / name
        if rng.integers(3) == 0 or not path.exists():
            continue
        data = bytearray(path.read_bytes())
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(0, len(data) + 1))
            piece = bytes(rng.choice(np.array(odd, dtype=object))) if rng.integers(2) else rng.bytes(8)
            data[at:at] = piece
        path.write_bytes(bytes(data))


def test_fuzz_summarize_run_records_problems_never_raises(tmp_path):
    import numpy as np

    rng = np.random.default_rng(99)
    damaged = 0
    for i in range(120):
        run = make_run(tmp_path, f"r{i}", submissions=[{"csv": f"s{i}.csv", "scores": {"volume_dice": 0.9}}])
        _fuzz_run_files(rng, run)
        summary = summarize_run(run)  # not the scan_runs safety net: the reader itself holds
        damaged += bool(summary.problems)
        row = summary_row(summary, varied_settings([summary]))
        json.dumps(row)
    assert damaged > 50
    result = CliRunner().invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 0, result.output


def test_submitted_shows_a_submission_as_what_it_was_made_with(tmp_path):
    """A run's submitted column: its own checkpoint's score, not an ensemble's it was part of (marked `(ens N)` when
    that is all there is), and not one of a best.pt a `train --resume` has since replaced (`stale`, said why)."""
    from liverctl.infer.evaluate import scores_path

    root = tmp_path / "runs"
    a, b, c, old = (make_run(root, name) for name in ("a", "b", "c", "old"))
    for run in (a, b, c):
        sidecar = run / "checkpoints" / "best.json"
        sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "saved_at": 1_700_000_000.5}))

    def submit(name, runs, score, members=True):
        csv_path = tmp_path / "subs" / f"{name}.csv"
        csv_path.parent.mkdir(exist_ok=True)
        csv_path.write_text("id,rle\ncase_0,1 0\n")
        scores_path(csv_path).write_text(json.dumps({"volume_dice": score}))
        record = {"ts": 1_600_000_000, "csv": str(csv_path), "which": "best", "runs": [str(r) for r in runs]}
        if members:
            record.update(ensemble=len(runs) > 1, members=[{"run": str(r), "saved_at": 1_700_000_000.5} for r in runs])
        for run in runs:
            with open(run / "submissions.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")

    submit("a", [a], 0.90)
    submit("ab", [a, b], 0.95)
    submit("c", [c], 0.97)
    submit("old-ab", [old, b], 0.99, members=False)  # a record of before `members`: its `runs` tell
    sidecar = c / "checkpoints" / "best.json"  # `train --resume` wrote another best.pt since
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "saved_at": 1_700_009_999.0}))

    from liverctl.runs.table import submitted_text

    by_name = {s.name: s for s in scan_runs(root)}
    assert [submitted_text(by_name[n]) for n in "abc"] == ["0.9000", "0.9900 (ens 2)", "stale"]
    assert submitted_text(by_name["old"]) == "0.9900 (ens 2)"
    assert by_name["b"].best_submitted is None and by_name["c"].best_submitted is None
    assert "submission c.csv was made with a checkpoint since replaced; its score is not shown" in by_name["c"].problems
    assert summary_row(by_name["b"], [])["submitted_in_ensemble"] == pytest.approx(0.99)


HOSTILE = "[bold red]boom[/] line one\nline two\x1b[31m\r\n" + "y" * 500_000  # markup, newlines, ESC; half a MB (a
# line over MAX_LINE_BYTES, 1 MB, is skipped unread: test_events.py)


@pytest.fixture
def ended_runs(tmp_path):
    """A completed run, one the NaN guard stopped, one that failed with a hostile message, one killed (no run_end)."""
    root = tmp_path / "runs"
    make_run(root, "ok", start_ts=1_700_000_000)
    make_run(root, "v5-nan", status="nan_abort", volume_dice=[0.5, None], planned=5, start_ts=1_700_000_100,
             message="training diverged: non-finite loss at step 8; 1 rollbacks did not help, stopping")
    make_run(root, "crash", status="failed", start_ts=1_700_000_200, message=HOSTILE)
    make_run(root, "killed", status=None, start_ts=1_700_000_300)
    return root


def test_runs_says_why_each_run_that_did_not_complete_ended(ended_runs):
    """`runs` showed failed / nan_abort but never why: run_end's message was only in `watch` and `report`. Now a
    line per such run says it, one line however hostile the message (cut, markup as written, no control
    characters), and --json / --csv rows carry it as `ended_because`; a killed run keeps its one problem line."""
    result = CliRunner().invoke(app, ["runs", str(ended_runs)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "2 runs ended without completing:" in lines
    assert ("  v5-nan: nan_abort: training diverged: non-finite loss at step 8; 1 rollbacks did not help, stopping"
            in lines)
    crash = next(line for line in lines if line.startswith("  crash: "))
    assert crash.startswith("  crash: failed at step 12: [bold red]boom[/] line one line two [31m yyy")
    assert crash.endswith("y…") and len(crash) < 400
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    assert not any(line.startswith(("  ok:", "  killed: failed", "  killed: interrupted")) for line in lines)
    assert sum("killed" in line for line in lines) == 2  # its table row, and its problem line
    rows = {r["name"]: r for r in json.loads(CliRunner().invoke(app, ["runs", str(ended_runs), "--json"]).stdout)}
    assert rows["ok"]["ended_because"] is None and rows["killed"]["ended_because"] is None
    assert rows["v5-nan"]["ended_because"].startswith("training diverged: non-finite loss at step 8")
    assert rows["crash"]["ended_because"].startswith("[bold red]boom[/] line one line two [31m y")
    assert len(rows["crash"]["ended_because"]) == 300
    csv_rows = {r["name"]: r for r in csv.DictReader(io.StringIO(
        CliRunner().invoke(app, ["runs", str(ended_runs), "--csv"]).stdout))}
    assert csv_rows["crash"]["ended_because"] == rows["crash"]["ended_because"]
    assert csv_rows["ok"]["ended_because"] == ""


def test_why_a_run_ended_is_cut_to_a_narrow_terminal(ended_runs, monkeypatch):
    """On a 50-column terminal the message is cut at the line's end (never folded onto more lines); a name and
    status too wide for one line are broken between the two, never inside either."""
    make_run(ended_runs, "a-run-with-a-name-long-enough-to-fill", status="failed", start_ts=1_600_000_000,
             message="CUDA out of memory " * 10)
    lines = runs_on_a_terminal(monkeypatch, ended_runs, 50).splitlines()
    start = lines.index("3 runs ended without completing:")
    ended = lines[start + 1:lines.index("1 run with something missing or odd:")]
    assert ended == [
        "  crash: failed at step 12: [bold red]boom[/] lin…",
        "  v5-nan: nan_abort: training diverged: non-finit…",
        "  a-run-with-a-name-long-enough-to-fill:",
        "  failed at step 12: CUDA out of memory CUDA out …",
    ], ended


def test_what_is_missing_or_odd_is_broken_between_words_on_a_narrow_terminal(ended_runs, monkeypatch):
    """On a 50-column terminal a run's problem line ran on to 200 columns (printed with soft_wrap): now it is
    broken between words, indented beneath its run's name, no path or number split, nothing lost."""
    run = make_run(ended_runs, "a-run-with-a-name-long-enough", status=None, start_ts=1_600_000_000)
    (run / "checkpoints" / "best.json").unlink()
    (run / "checkpoints" / "best.pt").write_bytes(b"")
    lines = runs_on_a_terminal(monkeypatch, ended_runs, 50).splitlines()
    odd = lines[lines.index("2 runs with something missing or odd:") + 1:]
    odd = odd[:next((i for i, line in enumerate(odd) if not line.startswith("  ")), len(odd))]
    assert odd and all(len(line) <= 50 for line in odd), odd
    assert [line[:4] for line in odd].count("    ") == len(odd) - 2  # beneath each run's first line
    assert "  a-run-with-a-name-long-enough:" in odd  # the path would not fit beside it: beneath
    words = " ".join(odd).split()
    assert "checkpoints/best.pt" in words and "best.json" in words  # whole
    whole = runs_on_a_terminal(monkeypatch, ended_runs, 1000)
    assert " ".join(whole.split()).endswith(" ".join(words))  # the same words, in order


def test_a_fold_that_failed_is_named_under_its_experiment(tmp_path):
    """An experiment stopped by its fold 1: `runs` said nan_abort in the experiment's row and the fold's, and
    nowhere why. Now the experiment's line gives experiment.json's message and the fold's its run_end message,
    and the fold's --json row (beneath its experiment's) carries it."""
    from run_fixtures import make_config

    from liverctl.experiment.folder import write_summary

    root = tmp_path / "runs"
    exp = root / "cv"
    exp.mkdir(parents=True)
    write_summary(exp, {"name": "cv", "preset": "demo", "store": "liver.zarr", "folds": [0, 1],
                        "config": make_config("demo"), "status": "nan_abort", "message": "fold 1 stopped: nan_abort",
                        "fold_results": {}})
    make_run(exp, "fold-0", settings={"data.fold": 0})
    make_run(exp, "fold-1", settings={"data.fold": 1}, status="nan_abort", volume_dice=[0.5, None],
             message="training diverged: non-finite grad at step 8; 1 rollbacks did not help, stopping")
    result = CliRunner().invoke(app, ["runs", str(root)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    start = lines.index("2 runs ended without completing:")
    assert lines[start + 1:start + 3] == [
        "  cv: nan_abort: fold 1 stopped: nan_abort",
        "  cv/fold-1: nan_abort: training diverged: non-finite grad at step 8; 1 rollbacks did not help, stopping",
    ]
    row = json.loads(CliRunner().invoke(app, ["runs", str(root), "--json"]).stdout)[0]
    assert row["ended_because"] == "fold 1 stopped: nan_abort"
    assert [f["ended_because"] for f in row["folds"]] == [
        None, "training diverged: non-finite grad at step 8; 1 rollbacks did not help, stopping"]


def test_a_rank_failure_file_is_shown_as_one_printable_line(tmp_path):
    """A `.rank-1.failed` file (anyone's, in a run folder from someone else) kept its first line whole: ESC
    sequences and invisible characters reached the terminal in `runs`' problem line."""
    import json

    from liverctl.runs.folder import RANK_FAILURE_FILE

    root = tmp_path / "runs"
    make_run(root, "ddp", status=None)
    record = {"ts": 1_700_000_500.0, "message": "RuntimeError: \x1b[2J\x1b[31mboom\u202e\x07" + "z" * 5000 + "\nsecond"}
    (root / "ddp" / RANK_FAILURE_FILE.format(rank=1)).write_text(json.dumps(record))
    (summary,) = scan_runs(root)
    assert summary.status == "failed"
    (problem,) = [p for p in summary.problems if "rank 1 failed" in p]
    assert "\x1b" not in problem and "\u202e" not in problem and "\x07" not in problem and "second" not in problem
    assert "RuntimeError: [2J [31mboom " + "z" * 472 + "…" in problem


def test_a_submissions_line_over_the_limit_is_skipped_unread(tmp_path):
    """A 200 MB line in someone's submissions.jsonl cost 1 GB in `liverctl runs` (the file read whole as text,
    split, the line parsed) and named the line's 200 MB csv as 'no longer exists'. Now it is read as the event log
    is (`events.LineReader`): a line over MAX_LINE_BYTES is one unreadable line, never held whole."""
    from memory_peak import traced_peak

    run = make_run(tmp_path, "r")
    with open(run / "submissions.jsonl", "ab") as fh:
        fh.write(b'{"csv":"' + b"x" * (16 << 20) + b'"}\n')
    summary, peak = traced_peak(lambda: summarize_run(run))
    assert "submissions.jsonl: 1 unreadable line skipped" in summary.problems and peak < 8 << 20


@pytest.fixture
def experiment_runs(tmp_path):
    """An experiment of 3 folds x 4 epochs, its decision made, beside a plain run of 4 epochs (listed first)."""
    from run_fixtures import make_config

    from liverctl.experiment.folder import write_summary

    root = tmp_path / "runs"
    exp = root / "cv"
    exp.mkdir(parents=True)
    cfg = make_config("demo")
    cfg["train"]["epochs"] = 4
    write_summary(exp, {"name": "cv", "preset": "demo", "store": "liver.zarr", "folds": [0, 1, 2], "config": cfg,
                        "status": "completed", "created": 1_600_000_000.0, "fold_results": {},
                        "cv": {"mean": 0.9, "std": 0.01, "folds": {"0": 0.89, "1": 0.9, "2": 0.91}},
                        "oof": {"volume_dice": 0.91, "slice_dice": 0.8, "global_dice": 0.93},
                        "decision": {"threshold": 0.5, "post": "largest_component", "volume_dice": 0.92,
                                     "cases": 10}})
    for fold in range(3):
        make_run(exp, f"fold-{fold}", settings={"data.fold": fold}, planned=4)
    make_run(root, "plain", planned=4, start_ts=1_700_000_000)
    return root


def test_the_legend_and_experiment_notes_are_broken_between_words_on_a_narrow_terminal(experiment_runs, monkeypatch):
    """The legend (386 characters), the experiments' note and an experiment's decision line were printed with
    soft wrap: one line each, past a 50- or 80-column terminal's edge. Now, as the problem lines, they are broken
    between words (`narrow.print_words`), a decision's continuation indented beneath it; the same words whole into
    a pipe."""
    piped = CliRunner().invoke(app, ["runs", str(experiment_runs)]).stdout
    legend = next(line for line in piped.splitlines() if line.startswith("Dice at the best epoch"))
    assert legend.endswith("stale: only of a checkpoint since replaced.")
    assert ("\n  cv: decided on 10 out-of-fold cases: threshold 0.5, post largest_component (volume Dice 0.9200)\n"
            in piped)
    for width in (50, 80):
        shown = runs_on_a_terminal(monkeypatch, experiment_runs, width)
        lines = shown.splitlines()
        assert lines and all(len(line) <= width for line in lines), [line for line in lines if len(line) > width]
        decision = next(i for i, line in enumerate(lines) if line.startswith("  cv: decided on"))
        assert lines[decision + 1].startswith("    ") and not lines[decision + 1].startswith("     ")
        after = shown.index("Dice at the best epoch")  # the notes beneath the table: the same words as piped
        assert shown[after:].split() == piped[piped.index("Dice at the best epoch"):].split()


def test_an_experiments_epochs_are_per_fold_in_the_table_json_and_csv(experiment_runs):
    """An experiment of 3 folds x 4 epochs showed `12/12` epochs (the sum over its folds), read as one model trained
    12 epochs. Now its row gives folds x epochs per fold (`3x4/4`, or `3x0-4/4` while a fold has not started);
    --json and --csv give the epochs every fold has done and those planned per fold, and `fold_epochs`. --csv listed
    a run before an experiment with a traceback (the experiment's columns were not in the header): now every row's
    columns are, and an experiment's fold rows follow it as in the table."""
    lines = CliRunner().invoke(app, ["runs", str(experiment_runs)]).stdout.splitlines()
    assert re.search(r"│ cv +│.*│ +3x4/4 │", "\n".join(lines)), "\n".join(lines)
    assert re.search(r"│ +cv/fold-0 +│.*│ +4/4 │", "\n".join(lines))
    (plain, exp) = json.loads(CliRunner().invoke(app, ["runs", str(experiment_runs), "--json"]).stdout)
    assert (plain["epochs"], plain["epochs_planned"]) == (4, 4)
    assert (exp["epochs"], exp["epochs_planned"], exp["fold_epochs"]) == (4, 4, [4, 4, 4])
    result = CliRunner().invoke(app, ["runs", str(experiment_runs), "--csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["name"] for r in rows] == ["plain", "cv", "cv/fold-0", "cv/fold-1", "cv/fold-2"]
    assert [(r["epochs"], r["epochs_planned"]) for r in rows] == [("4", "4")] * 5
    assert rows[1]["fold_epochs"] == "[4, 4, 4]" and rows[1]["cv_mean"] == "0.9" and rows[0]["cv_mean"] == ""

    import shutil

    shutil.rmtree(experiment_runs / "cv" / "fold-2")  # not started yet
    (exp,) = (s for s in scan_runs(experiment_runs) if s.kind == "experiment")
    assert (exp.epochs_done, exp.epochs_planned, exp.fold_epochs) == (0, 4, [4, 4, 0])
    from liverctl.runs.table import epochs_text

    assert epochs_text(exp) == "3x0-4/4"


def test_json_and_csv_take_a_file_or_alone_mean_stdout_as_evaluate_and_bench_do(three_runs, tmp_path):
    """`runs --json` was a flag where `evaluate --json` and `bench --json` take a file ('-': stdout). One
    convention now: alone (at the end or before another option) or '-', the rows on stdout and nothing else
    there; a file name, the rows written there and the table printed as ever. `runs --json RUNS_DIR` (the flag
    before the folder) is refused naming the folder, never taken silently."""
    runner = CliRunner()
    names = ["c-focal", "b-v5", "a-v3"]
    for args in (["--json"], ["--json", "-"], ["--json", "--sort", "started"]):
        result = runner.invoke(app, ["runs", str(three_runs), *args])
        assert result.exit_code == 0, result.output
        assert [r["name"] for r in json.loads(result.stdout)] == names, args
    csv_out = runner.invoke(app, ["runs", str(three_runs), "--csv", "--filter", "preset=v5*"])
    assert [r["name"] for r in csv.DictReader(io.StringIO(csv_out.stdout))] == ["c-focal", "b-v5"]

    out_json, out_csv = tmp_path / "rows.json", tmp_path / "rows.csv"
    result = runner.invoke(app, ["runs", str(three_runs), "--json", str(out_json), "--csv", str(out_csv)])
    assert result.exit_code == 0, result.output
    assert [r["name"] for r in json.loads(out_json.read_text())] == names
    assert [r["name"] for r in csv.DictReader(io.StringIO(out_csv.read_text()))] == names
    assert "b-v5" in result.stdout and f"rows written to {out_json} (--json)" in result.stdout  # the table too
    to_stdout = runner.invoke(app, ["runs", str(three_runs), "--csv", "--json", str(out_json)])
    assert [r["name"] for r in csv.DictReader(io.StringIO(to_stdout.stdout))] == names

    folder = runner.invoke(app, ["runs", "--json", str(three_runs)])
    assert folder.exit_code == 2 and folder.stderr.strip() == (
        f"error: {three_runs}: is a folder; --json takes a file name (alone: stdout); the runs folder goes "
        "before it, or as --runs-dir")
    both = runner.invoke(app, ["runs", str(three_runs), "--json", "--csv"])
    assert both.exit_code == 2 and "choose one of --json and --csv for stdout" in both.stderr


def test_fuzz_run_files_give_a_summary_or_one_liverctl_error(tmp_path):
    """A run folder's events.jsonl, submissions.jsonl, the scores.json beside a submission and config.toml, and an
    experiment's submissions.jsonl and scores.json, are anyone's files: damaged with scripts/fuzz_readers.py's
    mutations (values of other types, NaN, a key twice, bytes flipped, invalid UTF-8, control characters,
    truncated) and read by summarize_run / summarize_experiment (never an error), report's load_run,
    `train --resume`, and now and then `runs --json` (strict JSON), `runs` and `watch --once`.
    A list as an event's `v` was a TypeError in watch, a date in config.toml one in `runs --json`."""
    import shutil
    from collections import Counter

    import numpy as np
    from fuzz_script import load_fuzz_script, outcome

    fuzz = load_fuzz_script()
    base = fuzz.base_runs(tmp_path)
    files = [name for names in fuzz.RUN_FILES.values() for name in names]
    rng = np.random.default_rng(0)
    outcomes = Counter()
    commands = ("runs --json", "runs (table)", "watch --once")  # 0.1 s each: one case in 10, --json of every config
    for case in range(70):
        work = tmp_path / str(case)
        shutil.copytree(base.parent, work)
        name = files[case % len(files)]
        run, what = fuzz.damage_run_file(rng, work / "runs", name)
        for reader, read in fuzz.run_readers(work / "runs", run, resume=name == "b/config.toml"):
            if case % 10 == 0 or reader not in commands or (reader == "runs --json" and name.endswith(".toml")):
                outcomes[reader, outcome(read, f"case {case}: {what}: {reader}")] += 1
        shutil.rmtree(work)
    assert outcomes["summarize_run", "ok"] + outcomes["summarize_experiment", "ok"] == 70, outcomes
    assert outcomes["train --resume", "refused"] >= 5, outcomes

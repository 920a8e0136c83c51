"""One run history for every reader: for the same run folder, `liverctl runs --json`, `liverctl watch --once`
and `liverctl report` give the same status, best epoch and best volume Dice (the rules of
`liverctl.runs.history`)."""

from __future__ import annotations

import json
import re

import pytest
from run_fixtures import make_run
from typer.testing import CliRunner

from liverctl.cli import app
from liverctl.runs.folder import RunLock, rank_failure_path
from liverctl.runs.summary import summarize_run

runner = CliRunner()


def _from_runs(run):
    result = runner.invoke(app, ["runs", str(run.parent), "--json"])
    assert result.exit_code == 0, result.output
    (row,) = [r for r in json.loads(result.stdout) if r["name"] == run.name]
    return row["status"], row["best_epoch"], f"{row['volume_dice']:.4f}"


def _from_watch(run):
    result = runner.invoke(app, ["watch", str(run), "--once"], env={"COLUMNS": "200"})
    assert result.exit_code in (0, 1), result.output
    first = result.stdout.splitlines()[0].split()
    best = re.search(r"best volume Dice ([0-9.]+) \(epoch (\d+)", result.stdout)
    return first[1].lower(), int(best.group(2)), best.group(1)


def _from_report(run, out):
    result = runner.invoke(app, ["report", str(run), "--no-overlays", "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / "index.html").read_text(encoding="utf-8")
    table = page[page.index("<table>"):page.index("</table>")]
    rows = [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r) for r in table.split("</tr>") if "<t" in r]
    cells = dict(zip(rows[0], rows[1], strict=True))
    return cells["status"], int(cells["best epoch"]), cells["vol Dice"]


def _all_three(run, tmp_path):
    return {"runs": _from_runs(run), "watch": _from_watch(run), "report": _from_report(run, tmp_path / "rep")}


def test_runs_watch_and_report_agree_on_a_run_that_ended(tmp_path):
    # The best epoch is neither the last one nor the last finite one; a non-finite epoch sits between.
    run = make_run(tmp_path / "runs", "r", volume_dice=[0.6, 0.93, None, 0.91], planned=5, status="nan_abort",
                   nan_events=1)
    seen = _all_three(run, tmp_path)
    assert set(seen.values()) == {("nan_abort", 2, "0.9300")}, seen


@pytest.mark.parametrize("held", [True, False])
def test_runs_watch_and_report_agree_on_a_run_without_run_end(tmp_path, held):
    run = make_run(tmp_path / "runs", "r", volume_dice=[0.7, 0.8], planned=4, status=None)
    lock = RunLock(run).acquire() if held else None
    try:
        seen = _all_three(run, tmp_path)
    finally:
        if lock is not None:
            lock.release()
    want = ("running" if held else "interrupted", 2, "0.8000")
    assert set(seen.values()) == {want}, seen


def test_a_torchrun_run_whose_rank_0_was_killed_after_another_rank_failed_reads_as_failed(tmp_path):
    # torchrun SIGKILLs rank 0 30 s after rank 1 failed: no run_end, nobody holds the lock, and the run read
    # as interrupted, as if stopped by hand and fine to resume; rank 1's failure is in the folder
    run = make_run(tmp_path / "runs", "r", volume_dice=[0.7, 0.8], planned=4, status=None)
    rank_failure_path(run, 1).write_text('{"rank": 1, "ts": 1700000000.0, "message": "RuntimeError: CUDA error"}\n')
    seen = _all_three(run, tmp_path)
    assert set(seen.values()) == {("failed", 2, "0.8000")}, seen
    assert any("rank 1 failed (RuntimeError: CUDA error)" in p for p in summarize_run(run).problems)
    with RunLock(run):
        assert summarize_run(run).status == "running"  # rank 0 still ending: it writes run_end itself


def test_best_is_the_epoch_marked_best_the_one_best_pt_holds(tmp_path):
    """An epoch_end with a higher Dice that the trainer did not save as best.pt (is_best false): the best
    stays the epoch best.pt holds. (The old `runs` rule, the highest Dice, said epoch 3 here.)"""
    run = make_run(tmp_path / "runs", "r", volume_dice=[0.6, 0.9], planned=3, status="completed")
    events = run / "events.jsonl"
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    end = lines.pop()
    last_epoch = [e for e in lines if e["kind"] == "epoch_end"][-1]
    lines.append({**last_epoch, "seq": end["seq"], "epoch": 3, "volume_dice": 0.95, "slice_dice": 0.95,
                  "global_dice": 0.95, "is_best": False})
    lines.append({**end, "seq": end["seq"] + 1, "best": {"epoch": 2, "volume_dice": 0.9}})
    events.write_text("".join(json.dumps(e) + "\n" for e in lines))
    seen = _all_three(run, tmp_path)
    assert set(seen.values()) == {("completed", 2, "0.9000")}, seen

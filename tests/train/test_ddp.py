"""DDP on the CPU: `torchrun --nproc_per_node 2` with the gloo backend, through the real CLI."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_fixtures import SMALL_NET

from liverctl.runs.checkpoint import load_checkpoint
from liverctl.runs.events import read_events
from liverctl.runs.folder import checkpoint_path, rank_failure_path, tidy_run_dir
from liverctl.train import distributed
from liverctl.train.distributed import DistInfo, earlier_failure, report_failure
from liverctl.train.loop import run_training

# torchrun as this interpreter runs it: a console script's own interpreter may import another liverctl
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def _single_process_validation(store, state):
    """The three Dice figures of a checkpoint computed by one process, to compare with the reduced ones."""
    from liverctl.data import dataset as ds
    from liverctl.data import loaders
    from liverctl.data.store import LiverStore
    from liverctl.device import Precision
    from liverctl.train.distributed import DistInfo
    from liverctl.train.losses import build_loss
    from liverctl.train.models import build_model
    from liverctl.train.validation import validate

    cfg = state["config"]
    s = LiverStore.open(store)
    _, val_rows = ds.split_rows(s, cfg["data"]["fold"])
    val = ds.ValidationDataset(s, val_rows, cfg)
    loader = loaders.make_val_loader(val, cfg["train"]["batch_size"], loaders.LoaderPlan(1, None, False))
    model = build_model(cfg, pretrained=False)
    model.load_state_dict(state["model"])
    return validate(model, loader, loss_fn=build_loss(cfg), case_ids_by_code=val.case_ids, precision=Precision("off"),
                    device=torch.device("cpu"), info=DistInfo())


NO_TORCHRUN = pytest.mark.skipif(importlib.util.find_spec("torch.distributed.run") is None,
                                 reason="torchrun not installed")


def _torchrun_train(nproc: int, store, runs_dir, *sets: str, epochs: int = 1, scenario: str | None = None,
                    returncode: int = 0, timeout: float = 600, workers: int = 0) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node N -m liverctl.cli train` of a tiny demo run named 'ddp'
    (`scenario`: through tests/train/ddp_one_rank.py, which makes rank 1 differ first). `workers`: each rank's
    loader workers; 0 unless the test is about them: each worker process costs a rank ~6 s to start on 2 cores,
    about a third of such a test's time, where the 3 training steps take 1 s."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}
    target = ["-m", "liverctl.cli"] if scenario is None else [str(Path(__file__).with_name("ddp_one_rank.py")), scenario]
    cmd = [*TORCHRUN, "--standalone", "--nproc_per_node",
           str(nproc), *target, "train", "--preset", "demo", "--name", "ddp", "--runs-dir",
           str(runs_dir), "--store", str(store), "--device", "cpu", "--epochs", str(epochs), "-q"]
    for s in ["data.input_size=64", f"data.num_workers={workers}", "train.batch_size=2", "train.steps_per_epoch=3",
              *SMALL_NET, "train.log_every=1", *sets]:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=runs_dir)
    assert proc.returncode == returncode, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


@NO_TORCHRUN
def test_torchrun_with_one_process_still_trains_through_the_process_group(tiny_store, tmp_path):
    _torchrun_train(1, tiny_store, tmp_path)
    events = read_events(tmp_path / "ddp" / "events.jsonl")
    assert events[0]["world_size"] == 1 and events[0]["distributed_backend"] == "gloo"
    assert events[-1]["status"] == "completed"


@NO_TORCHRUN
def test_two_gloo_processes_train_with_one_writer_and_reduced_metrics(tiny_store, tmp_path):
    _torchrun_train(2, tiny_store, tmp_path, "train.inject_nan_at_steps=[1]", workers=1)  # each rank's worker too
    events = read_events(tmp_path / "ddp" / "events.jsonl")
    kinds = [e["kind"] for e in events]
    assert kinds.count("run_start") == 1 and kinds.count("run_end") == 1  # rank 0 only
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[0]["world_size"] == 2 and events[-1]["status"] == "completed"
    steps = [e for e in events if e["kind"] == "step"]
    assert [e["step"] for e in steps] == [1, 3]  # the NaN step (index 1) was skipped on both ranks
    assert [(e["action"], e["where"]) for e in events if e["kind"] == "nan"] == [("skip_step", "loss")]
    assert steps[0]["samples_per_s"] > 0
    epoch_end = next(e for e in events if e["kind"] == "epoch_end")
    state = load_checkpoint(checkpoint_path(tmp_path / "ddp", "last"))
    single = _single_process_validation(tiny_store, state)
    for key in ("volume_dice", "slice_dice", "global_dice", "val_loss"):
        assert epoch_end[key] == pytest.approx(single[key], abs=1e-4), key


@NO_TORCHRUN
@pytest.mark.parametrize(("scenario", "status", "returncode", "which", "message"), [
    ("no_room_after_epoch1", "time_limit", 0, "time_limit", "stopped before the time limit"),
    # rank 1 ends 130 (interrupted), which torchrun reports as a failure of the job
    ("signal_in_validation", "interrupted", 1, "last", "stopped by a signal to another rank"),
])
def test_ranks_end_a_run_together_when_only_one_wants_to(tiny_store, tmp_path, scenario, status, returncode, which,
                                                          message):
    # rank 0 went on into epoch 2 alone, and its first step failed on the closed connection ("failed:
    # RuntimeError: ... Connection closed by peer", exit 1) instead of ending the run as rank 1 did
    _torchrun_train(2, tiny_store, tmp_path, epochs=3, scenario=scenario, returncode=returncode, timeout=240)
    events = read_events(tmp_path / "ddp" / "events.jsonl")
    assert events[-1]["kind"] == "run_end", events[-1]
    assert (events[-1]["status"], events[-1]["message"]) == (status, message)
    assert [e["which"] for e in events if e["kind"] == "checkpoint"][-1] == which
    assert load_checkpoint(checkpoint_path(tmp_path / "ddp", "last"))["epoch"] == 1


@NO_TORCHRUN
def test_a_validation_one_rank_has_no_time_for_is_abandoned_by_all_and_resumed(tiny_store, tmp_path):
    # only rank 1's budget abandons the validation (after its first batch); rank 0, with time left, must
    # abandon it too, in the validation's one reduction, and save the epoch's steps once (fold 4 holds two
    # cases: one for each rank to validate)
    _torchrun_train(2, tiny_store, tmp_path, "data.fold=4", scenario="validation_out_of_time", timeout=240)
    run = tmp_path / "ddp"
    events = read_events(run / "events.jsonl")
    assert not [e for e in events if e["kind"] == "epoch_end"]
    assert "no room to finish the validation of epoch 1" in next(e for e in events if e["kind"] == "note")["message"]
    assert [e["which"] for e in events if e["kind"] == "checkpoint"] == ["time_limit"]
    assert (events[-1]["kind"], events[-1]["status"]) == ("run_end", "time_limit")
    state = load_checkpoint(checkpoint_path(run, "last"), resume=True)
    assert (state["epoch"], state["step_in_epoch"]) == (0, 3)
    # --resume runs that validation and nothing else (in one process: last.pt is the same for any world size)
    result = run_training(None, run, resume=True, device="cpu", show_progress=False)
    assert (result["status"], result["epochs_done"], result["global_step"]) == ("completed", 1, 3)
    resumed = read_events(run / "events.jsonl")[len(events):]
    assert [e["kind"] for e in resumed if e["kind"] in ("step", "epoch_end")] == ["epoch_end"]


@NO_TORCHRUN
def test_the_reported_training_loss_is_the_mean_over_ranks(tiny_store, tmp_path):
    # it was rank 0's own: the loss of half of each step's batch, and the epoch's train_loss of half its samples
    _torchrun_train(2, tiny_store, tmp_path, epochs=1, scenario="record_losses")
    per_rank = [[float(x) for x in (tmp_path / f"losses-{r}.txt").read_text().split()] for r in (0, 1)]
    assert len(per_rank[0]) == len(per_rank[1]) == 3
    means = [(a + b) / 2 for a, b in zip(*per_rank, strict=True)]
    assert per_rank[0] != per_rank[1]
    events = read_events(tmp_path / "ddp" / "events.jsonl")
    assert [e["loss"] for e in events if e["kind"] == "step"] == pytest.approx(means, rel=1e-6)
    epoch_end = next(e for e in events if e["kind"] == "epoch_end")
    assert epoch_end["train_loss"] == pytest.approx(sum(means) / len(means), rel=1e-6)


@NO_TORCHRUN
def test_a_rank_that_fails_on_its_own_is_named_in_the_log_and_the_error(tiny_store, tmp_path):
    # rank 0 reported what it saw: its next collective failing ("RuntimeError: [.../gloo/transport/tcp/
    # pair.cc:561] Connection closed by peer ...") once rank 1 had ended, and rank 1's own error was only on
    # rank 1's stderr
    proc = _torchrun_train(2, tiny_store, tmp_path, scenario="fails_in_step", returncode=1, timeout=240)
    own = "rank 1 failed: RuntimeError: CUDA out of memory (rank 1's own failure)"
    events = read_events(tmp_path / "ddp" / "events.jsonl")
    assert (events[-1]["kind"], events[-1]["status"], events[-1]["message"]) == ("run_end", "failed", own)
    # and rank 0 prints it, also when torchrun's SIGTERM (sent to the ranks left once rank 1 has exited) comes
    # between run_end and that line (the scenario makes rank 0 wait there): the default SIGTERM ended rank 0
    # with no line
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {own} (its traceback is on that rank's stderr)"], proc.stderr[-3000:]
    assert "exitcode  : -15" not in proc.stderr  # no rank was ended by torchrun's SIGTERM
    assert "Connection closed by peer" not in proc.stderr.split(own)[-1]  # rank 0 printed no traceback of its own


@NO_TORCHRUN
def test_a_rank_killed_without_a_word_is_named_as_dead_in_the_log_and_the_error(tiny_store, tmp_path):
    # SIGKILL (the out-of-memory killer's) leaves no failure of rank 1's own: rank 0 reported its broken
    # collective ("failed: RuntimeError: [.../gloo/transport/tcp/pair.cc:545] Read error ...: Connection reset by
    # peer") with a traceback, and nothing said that rank 1 had been killed
    proc = _torchrun_train(2, tiny_store, tmp_path, scenario="killed_in_step", returncode=1, timeout=240)
    events = read_events(tmp_path / "ddp" / "events.jsonl")
    assert (events[-1]["kind"], events[-1]["status"]) == ("run_end", "failed")
    assert events[-1]["message"].startswith("rank 1 died: "), events[-1]["message"]
    assert "out-of-memory" in events[-1]["message"]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {events[-1]['message']} (see that rank's stderr and the kernel log, `dmesg`)"], \
        proc.stderr[-3000:]
    assert "Connection reset by peer" not in proc.stderr.split("[rank0]")[-1]  # no traceback from rank 0


@NO_TORCHRUN
def test_rank_0_killed_is_named_by_the_rank_that_outlived_it(tiny_store, tmp_path):
    # rank 1 left its broken collective as its failure ("RuntimeError: [.../gloo/transport/tcp/pair.cc:561]
    # Connection closed by peer ..."), which `runs` then showed as the run's reason
    from liverctl.runs.summary import summarize_run

    _torchrun_train(2, tiny_store, tmp_path, scenario="rank_0_killed_in_step", returncode=1, timeout=240)
    run = tmp_path / "ddp"
    assert read_events(run / "events.jsonl")[-1]["kind"] != "run_end"  # rank 0 alone writes the log
    summary = summarize_run(run)
    assert summary.status == "failed"
    assert any(problem.startswith("no run_end event: rank 0 died: ") and problem.endswith("(as rank 1 found)")
               for problem in summary.problems), summary.problems


@NO_TORCHRUN
def test_rank_0_ends_its_validation_at_once_when_another_rank_has_failed(tiny_store, tmp_path):
    # rank 0 validated its own cases to the end (no collective until the reduction, which then failed): a
    # validation longer than torchrun's grace (30 s after rank 1 exited) ended with rank 0 killed, no run_end
    proc = _torchrun_train(2, tiny_store, tmp_path, "data.fold=4", scenario="fails_in_validation", returncode=1,
                           timeout=240)
    # none after rank 1 failed: rank 0 holds its second batch until then; on a loaded machine rank 1 can fail
    # before rank 0 has finished its first (12 batches without the check)
    validated = (tmp_path / "val-batches-0.txt").read_text().split()
    assert validated in (["1"], ["1", "2"]), validated
    own = "rank 1 failed: RuntimeError: CUDA error: an illegal memory access (rank 1's own failure)"
    events = read_events(tmp_path / "ddp" / "events.jsonl")
    assert (events[-1]["kind"], events[-1]["status"], events[-1]["message"]) == ("run_end", "failed", own)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {own} (its traceback is on that rank's stderr)"], proc.stderr[-3000:]


def test_rank_0_reports_the_first_failure_of_another_rank_before_its_own(tmp_path):
    info = DistInfo(rank=0, world=4, launched=True)
    for rank, ts, message in ((1, 105.0, "RuntimeError: later"), (2, 103.0, "ValueError: first"),
                              (3, 99.0, "stale: a failure of an earlier start")):
        rank_failure_path(tmp_path, rank).write_text(f'{{"rank": {rank}, "ts": {ts}, "message": "{message}"}}\n')
    assert earlier_failure(info, tmp_path, since=100.0, failed_at=110.0, wait_s=0)[0] == "rank 2 failed: ValueError: first"
    # rank 0 failed first (the others' failures are its broken collectives): its own error stands
    assert earlier_failure(info, tmp_path, since=100.0, failed_at=102.0, wait_s=0) is None
    rank_failure_path(tmp_path, 2).write_text("{half a rec")  # not one a rank wrote: passed over
    assert earlier_failure(info, tmp_path, since=100.0, failed_at=110.0, wait_s=0)[0] == "rank 1 failed: RuntimeError: later"
    assert len(tidy_run_dir(tmp_path)) == 3 and not list(tmp_path.iterdir())  # a new start reads none of them


def test_a_rank_leaves_its_failure_in_one_line_or_not_at_all(tmp_path):
    report_failure(DistInfo(rank=2, world=3, launched=True), tmp_path, "RuntimeError: NCCL error\n  detail\n")
    text = rank_failure_path(tmp_path, 2).read_text()
    assert text.count("\n") == 1 and '"message": "RuntimeError: NCCL error"' in text
    report_failure(DistInfo(rank=1, world=3, launched=True), tmp_path / "elsewhere", "x")  # no such folder here
    assert not (tmp_path / "elsewhere").exists()


def test_rank_0_tells_a_rank_killed_without_a_word_from_one_still_running(tmp_path, monkeypatch):
    import signal
    import socket

    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # collected, as torchrun collects a rank: /proc has nothing of it
    try:
        killed.send_signal(signal.SIGKILL)
        while Path(f"/proc/{killed.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            pass  # not collected yet: the kernel keeps how it ended
        host, info = socket.gethostname(), DistInfo(rank=0, world=4, launched=True)
        processes = [(host, os.getpid()), (host, os.getpid()), ("another-machine", gone.pid), (host, killed.pid)]
        monkeypatch.setattr(distributed, "_processes", processes)
        assert distributed.died_without_a_word(info) == (
            "rank 3 died: killed by SIGKILL (signal 9), as the out-of-memory killer does: out of memory?")
        assert earlier_failure(info, tmp_path, since=0, failed_at=1, wait_s=0)[0].startswith("rank 3 died")
        processes[3] = (host, gone.pid)
        assert distributed.died_without_a_word(info) == (
            "rank 3 died: it ended without a word: killed (the out-of-memory killer's SIGKILL?) or crashed")
        processes[3] = (host, os.getpid())  # every rank still running: none died
        assert distributed.died_without_a_word(info) is None
        assert earlier_failure(info, tmp_path, since=0, failed_at=1, wait_s=0) is None
    finally:
        killed.kill()
        killed.wait()

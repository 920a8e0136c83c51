"""The loop's NaN-guard actions on a stand-in session (a linear layer, SGD, the trainer's scheduler):
what a rollback restores and cuts at once, before any further step. tests/train/test_train.py trains for real."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from liverctl.config import resolve_config
from liverctl.errors import NaNAbort
from liverctl.train.loop import _ended_by, _Loop, _NullEvents
from liverctl.train.nan_guard import ABORT, ROLLBACK, SKIP, NaNGuard
from liverctl.train.progress import ConsoleProgress
from liverctl.train.session import build_scheduler


class _Events(_NullEvents):
    def __init__(self):
        self.emitted = []

    def emit(self, kind, **fields):
        self.emitted.append({"kind": kind, **fields})
        return {}


def _loop(tmp_path, lr=0.1, factor=0.25):
    cfg = resolve_config("demo", {"optim.lr": lr, "optim.scheduler": "constant", "optim.warmup_steps": 0,
                                  "train.nan_lr_factor": factor})
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = build_scheduler(cfg, optimizer, total_steps=10)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    session = SimpleNamespace(cfg=cfg, raw_model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                              epoch=1, global_step=5, good_epoch=1)
    loop = _Loop(run_dir=tmp_path, info=None, events=_Events(), progress=ConsoleProgress(enabled=False),
                 budget=None, s=session, guard=NaNGuard(skip_limit=2, max_rollbacks=1))
    loop.good.capture(model=model, optimizer=optimizer, scaler=scaler)
    return loop


def _drift(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)


def test_a_rollback_restores_the_good_weights_and_cuts_the_learning_rate_at_once(tmp_path):
    loop = _loop(tmp_path)
    model, optimizer = loop.s.raw_model, loop.s.optimizer
    good = {k: v.clone() for k, v in model.state_dict().items()}
    _drift(model)
    loop.on_non_finite(ROLLBACK, "loss", float("nan"))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in good.items())
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)  # the very next step, not only later ones
    optimizer.step()  # no gradients: changes nothing, but a scheduler step follows an optimiser step
    loop.s.scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)  # and every step after it
    (event,) = loop.events.emitted
    assert event["kind"] == "nan" and event["action"] == ROLLBACK and "lr x0.25" in event["message"]


def test_a_skip_changes_nothing_and_an_abort_raises(tmp_path):
    loop = _loop(tmp_path)
    model = loop.s.raw_model
    _drift(model)
    drifted = {k: v.clone() for k, v in model.state_dict().items()}
    loop.on_non_finite(SKIP, "grad", 1.0, float("inf"))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in drifted.items())
    assert loop.s.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    loop.guard.rollbacks = 2
    with pytest.raises(NaNAbort, match="1 rollbacks did not help"):
        loop.on_non_finite(ABORT, "loss", float("nan"))
    assert [e["action"] for e in loop.events.emitted] == [SKIP, ABORT]


def test_a_run_whose_set_up_fails_writes_no_run_end(tmp_path):
    """A resume whose set-up failed appended run_end "failed" to the run's log, so an interrupted run read as
    failed (`runs`, `watch`); the run never started, and the command's one line says why."""
    from liverctl.errors import LiverctlError
    from liverctl.runs.events import read_events
    from liverctl.train.loop import run_training

    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "events.jsonl").write_text('{"v": 1, "seq": 0, "kind": "run_end", "status": "interrupted"}\n')
    cfg = resolve_config("demo", {"data.store": str(tmp_path / "gone.zarr")})
    with pytest.raises(LiverctlError, match="no store here"):
        run_training(cfg, run_dir, device="cpu", show_progress=False)
    assert [e["status"] for e in read_events(run_dir / "events.jsonl")] == ["interrupted"]


@pytest.mark.parametrize(("saved", "read"), [
    ({"sum": 2.5, "count": 5}, (2.5, 5)),
    (None, (0.0, 0)),  # a checkpoint from before epoch_losses
    ({"sum": float("nan"), "count": 5}, (0.0, 0)),
    ({"sum": 2.5, "count": -1}, (0.0, 0)),
    ({"sum": "2.5", "count": 5}, (0.0, 0)),
    ({"sum": 2.5, "count": True}, (0.0, 0)),
    ([2.5, 5], (0.0, 0)),
])
def test_a_checkpoints_epoch_losses_are_read_only_as_a_run_writes_them(saved, read):
    from liverctl.train.session import _epoch_losses

    assert _epoch_losses(saved) == read


def test_a_failure_in_a_loader_worker_ends_the_run_with_the_workers_own_line():
    # run_end's message was torch's rebuilt text: "Caught FileNotFoundError in DataLoader worker process 0."
    # and the worker's whole traceback (also what a torchrun rank reported to rank 0)
    import sys

    from torch._utils import ExceptionWrapper

    try:
        raise FileNotFoundError("store/liver.zarr does not exist")
    except FileNotFoundError:
        wrapped = ExceptionWrapper(sys.exc_info(), where="in DataLoader worker process 0")
    try:
        wrapped.reraise()
    except FileNotFoundError as exc:
        assert _ended_by(exc) == ("failed", "FileNotFoundError: store/liver.zarr does not exist")


def test_the_epoch_line_is_the_only_line_off_a_terminal():
    """`train ... 2> train.log` (or a notebook cell): a blank line before every epoch's line, the transient
    step bar leaving nothing to clear; notes said meanwhile still get through."""
    import io

    from rich.console import Console

    log = io.StringIO()
    progress = ConsoleProgress(console=Console(file=log, soft_wrap=True, color_system=None))
    metrics = {"train_loss": 0.5, "val_loss": 0.25, "volume_dice": 0.75, "slice_dice": 0.5, "global_dice": 0.875}
    for epoch in range(2):
        progress.start_epoch(epoch, 2, steps=3)
        progress.step(0.5, 10.0, 1e-3)
        if epoch == 1:
            progress.note("note: something")
        progress.end_epoch(epoch, 2, metrics, seconds=3.0, is_best=epoch == 0)
    line = "train loss 0.5000  val loss 0.2500  volume Dice 0.7500  slice Dice 0.5000  global Dice 0.8750  3s"
    assert log.getvalue().splitlines() == [f"epoch 1/2  {line}  best", "note: something", f"epoch 2/2  {line}"]


def test_a_training_note_prints_as_written(tmp_path):
    """Training's notes went through rich's own escape, not `esc` as every other line: ESC in a case id reached
    the terminal and a trailing backslash printed twice. Brackets (`[bold]`, `[/]`) print as written."""
    import io

    from rich.console import Console

    log = io.StringIO()
    loop = _Loop(run_dir=tmp_path, info=None, events=_Events(),
                 progress=ConsoleProgress(console=Console(file=log, soft_wrap=True, color_system=None)), budget=None)
    message = "case a\x1b[2Jb of runs/x[bold]y[/] in C:\\runs\\"
    loop.note(message)
    assert log.getvalue() == "note: case a\\x1b[2Jb of runs/x[bold]y[/] in C:\\runs\\\n"
    assert loop.events.emitted == [{"kind": "note", "message": message}]  # the log keeps it as it is


def test_a_batch_that_does_not_fit_the_gpu_is_one_line_saying_what_to_lower(tiny_store, tmp_path, monkeypatch):
    """CUDA's out-of-memory error (a batch too large for the GPU: v5 at batch 16, 512 px on a 16 GB card) went
    through as a traceback; the CPU stands in, its step raising torch's error with CUDA's text."""
    from train_fixtures import SMALL_MODEL, tiny_cfg

    from liverctl.errors import LiverctlError
    from liverctl.runs.events import read_events
    from liverctl.train import loop as loop_module

    said = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 15.89 GiB of which "
            "1.20 GiB is free. Including non-PyTorch memory, this process has 14.68 GiB memory in use. If reserved "
            "but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True")

    def step(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError(said)

    monkeypatch.setattr(loop_module, "guarded_step", step)
    cfg = tiny_cfg(tiny_store, "train.epochs=1", *SMALL_MODEL)
    expected = ("training at train.batch_size 4, data.input_size 64 ran out of memory (CUDA out of memory. Tried to "
                "allocate 2.00 GiB. GPU 0 has a total capacity of 15.89 GiB of which 1.20 GiB is free.); lower "
                "train.batch_size or data.input_size")
    with pytest.raises(LiverctlError) as raised:
        loop_module.run_training(cfg, tmp_path / "oom", device="cpu", show_progress=False)
    assert str(raised.value) == expected
    end = read_events(tmp_path / "oom" / "events.jsonl")[-1]
    assert (end["kind"], end["status"], end["message"]) == ("run_end", "failed", expected)

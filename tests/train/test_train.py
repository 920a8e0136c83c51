"""Training on the tiny store: event sequence, checkpoints, exact resume, NaN guard, signals, bad input."""

from __future__ import annotations

import math
import signal
from pathlib import Path

import pytest
import torch
from full_disk import fill_disk
from train_fixtures import SMALL_MODEL, SMALL_NET, finite_weights, tiny_cfg
from typer.testing import CliRunner

from liverctl.cli import app
from liverctl.config import read_config
from liverctl.errors import LiverctlError, NaNAbort
from liverctl.runs.checkpoint import load_checkpoint, read_sidecar
from liverctl.runs.events import read_events
from liverctl.runs.folder import checkpoint_path
from liverctl.train import loop
from liverctl.train.budget import TimeBudget, parse_duration

torch.set_num_threads(1)


def kinds(run_dir):
    return [e["kind"] for e in read_events(run_dir / "events.jsonl")]


def test_a_fold_that_holds_one_case_out_says_what_its_figures_are(tiny_store, tmp_path):
    """On the real CT volumes (3 cases, 3 folds) every epoch printed "volume Dice 0.2701  slice Dice 0.2701  global
    Dice 0.2701": one 3-slice case held out, of which volume and global Dice are one figure; nothing said that the
    best epoch was chosen on that case alone. A note now says so; a fold of two cases, or max_val_cases 1 (asked
    for), gets none."""
    from liverctl.data.store import LiverStore

    folds = list(LiverStore.open(tiny_store).folds().items())
    one = next(f for _, f in folds if [g for _, g in folds].count(f) == 1)
    two = next(f for _, f in folds if [g for _, g in folds].count(f) == 2)
    case = next(c for c, f in folds if f == one)

    def notes(name, *sets):
        cfg = tiny_cfg(tiny_store, "train.epochs=1", "train.steps_per_epoch=1", *sets)
        loop.run_training(cfg, tmp_path / name, device="cpu", show_progress=False)
        events = read_events(tmp_path / name / "events.jsonl")
        assert events[0]["kind"] == "run_start"  # the data's notes came before it
        return [e["message"] for e in events if e["kind"] == "note"]

    slices = len(LiverStore.open(tiny_store).slice_index().rows(split="train", folds=[one]))
    assert notes("one", f"data.fold={one}") == [
        f"fold {one} validates on one case, {case!r} ({slices} slices): its volume and global Dice are one figure, "
        "and the best epoch is chosen on that case alone; fewer folds (`liverctl ingest DATA --folds N`) hold more "
        "cases out per fold"]
    assert notes("two", f"data.fold={two}") == []
    assert notes("asked", f"data.fold={two}", "data.max_val_cases=1") == []


def test_an_epoch_of_fewer_steps_than_log_every_has_its_rate(tiny_store, tmp_path, monkeypatch):
    """2 steps an epoch under train.log_every 100 write no step event: watch said "— samples/s" all run long, and
    the console's progress line "0.0 img/s" (the rate of the last step event, none yet). epoch_end carries the
    rate of the epoch's steps (validation left out) and the progress line the epoch's rate so far."""
    from liverctl.train.progress import ConsoleProgress

    shown = []
    monkeypatch.setattr(ConsoleProgress, "step", lambda self, loss, rate, lr: shown.append(rate))
    cfg = tiny_cfg(tiny_store, "train.log_every=100")
    assert loop.run_training(cfg, tmp_path / "r", device="cpu", show_progress=False)["status"] == "completed"
    events = read_events(tmp_path / "r" / "events.jsonl")
    assert "step" not in [e["kind"] for e in events]
    assert len(shown) == 4 and all(rate > 0 for rate in shown)
    samples = cfg["train"]["steps_per_epoch"] * cfg["train"]["batch_size"]
    for e in (e for e in events if e["kind"] == "epoch_end"):
        # the steps alone took less than the epoch with its validation and checkpoints
        assert math.isfinite(e["samples_per_s"]) and e["samples_per_s"] > samples / e["seconds"]


def test_short_training_writes_events_config_and_both_checkpoints(tiny_store, tmp_path):
    cfg = tiny_cfg(tiny_store)
    started = []
    result = loop.run_training(cfg, tmp_path / "r1", device="cpu", show_progress=False,
                               on_start=lambda: started.append(kinds(tmp_path / "r1")), notes=("how it started",))
    assert result["status"] == "completed" and result["global_step"] == 4
    assert started == [[]]  # once, before the run_start event
    seq = kinds(tmp_path / "r1")
    assert seq[0] == "run_start" and seq[-1] == "run_end"
    notes = [e["message"] for e in read_events(tmp_path / "r1" / "events.jsonl") if e["kind"] == "note"]
    assert notes[-1] == "how it started"  # the start's notes (check_fresh's), after run_start (and the data's)
    assert seq.count("epoch_end") == 2 and "step" in seq and "nan" not in seq
    events = read_events(tmp_path / "r1" / "events.jsonl")
    start = events[0]
    # data.store as given (absolute here) and where it is from the folder train ran in: found from elsewhere
    assert start["store"] == str(Path(start["config"]["data"]["store"]).absolute())
    assert start["amp"] == "off" and start["device"] == "cpu" and start["config"]["preset"] == "demo"
    end_epochs = [e for e in events if e["kind"] == "epoch_end"]
    for e in end_epochs:
        assert {"train_loss", "val_loss", "volume_dice", "slice_dice", "global_dice", "seconds", "is_best"} <= set(e)
    # the figures the checkpoints carry are the epochs' own (their value is checked against `evaluate`
    # in test_validation_dice_agrees_with_evaluate_on_the_same_predictions)
    best_epoch = max(end_epochs, key=lambda e: e["volume_dice"])  # the first of equals, as the loop keeps it
    assert [e["is_best"] for e in end_epochs] == [True, end_epochs[1]["volume_dice"] > end_epochs[0]["volume_dice"]]
    assert events[-1]["best"] == {"epoch": best_epoch["epoch"], "volume_dice": best_epoch["volume_dice"]}
    for which, e in (("last", end_epochs[-1]), ("best", best_epoch)):
        metrics = read_sidecar(tmp_path / "r1", which)["metrics"]
        assert {k: metrics[k] for k in ("volume_dice", "slice_dice", "global_dice", "val_loss")} == {
            k: e[k] for k in ("volume_dice", "slice_dice", "global_dice", "val_loss")}, which
    assert events[-1]["status"] == "completed"
    assert read_config(tmp_path / "r1" / "config.toml") == cfg
    for which in ("last", "best"):
        state = load_checkpoint(checkpoint_path(tmp_path / "r1", which))
        assert state["config"] == cfg and {"optimizer", "scheduler", "scaler", "rng"} <= set(state)
        torch.load(checkpoint_path(tmp_path / "r1", which), weights_only=True)  # plain data: no code can run
        assert read_sidecar(tmp_path / "r1", which)["preset"] == "demo"
    assert load_checkpoint(checkpoint_path(tmp_path / "r1", "last"))["epoch"] == 2
    _resume_keeps_the_recorded_split(tmp_path / "r1", cfg, tiny_store)


def _resume_keeps_the_recorded_split(run, cfg, store_path):
    """The checkpoints record the cases the run trained and validated on; a resume whose store now splits them
    otherwise (re-ingested with other folds: it went on training on its former validation cases, and report
    scored it on its training cases), or whose last.pt holds integer weights (cast into the float parameters),
    is refused in one line. Part of the short training above: it needs a trained last.pt."""
    from liverctl.data.dataset import split_rows
    from liverctl.data.store import LiverStore
    from liverctl.runs.validation_cases import case_split

    store = LiverStore.open(store_path)
    split = case_split(store, *split_rows(store, cfg["data"]["fold"]))
    assert split["validation"] and split["training"]
    assert read_sidecar(run, "best")["cases"] == read_sidecar(run, "last")["cases"] == split
    path = checkpoint_path(run, "last")
    original = path.read_bytes()
    state = torch.load(path, weights_only=True)
    assert state["cases"] == split
    more = {**cfg, "train": {**cfg["train"], "epochs": 3}}
    moved = split["validation"][0]  # the store now validates on it; the record says the run trained on it
    weight = next(k for k, v in state["model"].items() if v.is_floating_point())
    for change, words in [
        (lambda s: s.update(cases={"training": [moved], "validation": []}),
         f"now puts 1 of this run's training cases on the validation side ({moved})"),
        (lambda s: s.update(cases={"training": [], "validation": split["training"][:1]}),
         f"now puts 1 of this run's validation cases on the training side ({split['training'][0]})"),
        (lambda s: s["model"].update({weight: s["model"][weight].to(torch.int32)}),
         f"refused: weight {weight!r} holds integer values (int32)"),
        # Optimizer.load_state_dict checks none of these: a shape failed mid-run, the rest went on quietly
        (lambda s: s["optimizer"]["state"][0].update(exp_avg=s["optimizer"]["state"][0]["exp_avg"].flatten()[:3]),
         "refused: optimizer state 'exp_avg' of parameter 0 has shape (3,) where the parameter has"),
        (lambda s: s["optimizer"]["state"][0].update(exp_avg_sq=s["optimizer"]["state"][0]["exp_avg_sq"].to(torch.int64)),
         "refused: optimizer state 'exp_avg_sq' of parameter 0 holds integer values"),
        (lambda s: s["optimizer"]["state"][0]["exp_avg"].view(-1)[:1].fill_(float("nan")),
         "refused: optimizer state 'exp_avg' of parameter 0 holds NaN or infinity"),
        # carried on with: compared with the next validation's Dice (TypeError), counted, saved again
        (lambda s: s["best"].update(volume_dice="0.9"), "checkpoint entry 'best' volume_dice should be a finite"),
        (lambda s: s.update(best={"epoch": 1}), "checkpoint entry 'best' should hold epoch and volume_dice"),
        (lambda s: s.update(guard={"skipped": "x"}), "checkpoint entry 'guard' skipped should be a whole number"),
    ]:
        changed = torch.load(path, weights_only=True)
        change(changed)
        torch.save(changed, path)
        started = []  # `train` prints "run <folder> ..." there: not for a resume refused
        with pytest.raises(LiverctlError) as exc:
            loop.run_training(more, run, resume=True, device="cpu", show_progress=False,
                              on_start=lambda started=started: started.append(1))
        assert str(exc.value).startswith(f"{path}: ") and words in str(exc.value) and "\n" not in str(exc.value)
        assert not started
        path.write_bytes(original)


class _StopAtStep(TimeBudget):
    """A time budget that runs out at a given global step (to stop a run mid-epoch)."""

    stop_at = 3
    steps = 0

    def room_for_step(self, step_s: float) -> bool:
        _StopAtStep.steps += 1
        return _StopAtStep.steps < self.stop_at


def test_resume_mid_epoch_continues_exactly(tiny_store, tmp_path, monkeypatch):
    cfg = tiny_cfg(tiny_store)
    straight = loop.run_training(cfg, tmp_path / "straight", device="cpu", show_progress=False)
    monkeypatch.setattr(loop, "TimeBudget", _StopAtStep)
    _StopAtStep.steps = 0
    cut = loop.run_training(cfg, tmp_path / "cut", device="cpu", show_progress=False)
    assert cut["status"] == "time_limit" and cut["global_step"] == 3
    assert kinds(tmp_path / "cut")[-2:] == ["checkpoint", "run_end"]
    # what a kill can leave: a torn last event line and the temporary file of a checkpoint being written
    with open(tmp_path / "cut" / "events.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"v":1,"seq":99,"kind":"st')
    leftover = tmp_path / "cut" / "checkpoints" / ".best.pt.abc123.tmp"
    leftover.write_bytes(b"half a checkpoint")
    monkeypatch.setattr(loop, "TimeBudget", TimeBudget)
    resumed = loop.run_training(cfg, tmp_path / "cut", resume=True, device="cpu", show_progress=False)
    assert not leftover.exists()
    assert resumed["status"] == "completed"
    assert resumed["global_step"] == straight["global_step"] == 4
    a = load_checkpoint(checkpoint_path(tmp_path / "straight", "last"))
    b = load_checkpoint(checkpoint_path(tmp_path / "cut", "last"))
    for key, tensor in a["model"].items():
        assert torch.allclose(tensor.float(), b["model"][key].float(), atol=1e-6), key
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    assert a["metrics"]["volume_dice"] == pytest.approx(b["metrics"]["volume_dice"], abs=1e-6)
    starts = [e for e in read_events(tmp_path / "cut" / "events.jsonl") if e["kind"] == "run_start"]
    assert starts[1]["resumed_from"] == {"epoch": 1, "global_step": 3, "step_in_epoch": 1}
    # an epoch resumed midway reports the train_loss of all its steps (last.pt holds their sum and count): it
    # was the mean after the resume only, and after a stop at an epoch's last step, before validation, null,
    # which `watch` took for a NaN (exit 1 from `watch --once`) in a run without one
    def train_losses(run):
        return [e["train_loss"] for e in read_events(run / "events.jsonl") if e["kind"] == "epoch_end"]

    expected = train_losses(tmp_path / "straight")
    assert all(x is not None for x in expected) and train_losses(tmp_path / "cut") == pytest.approx(expected, abs=1e-6)
    monkeypatch.setattr(loop, "TimeBudget", _StopAtStep)
    _StopAtStep.stop_at, _StopAtStep.steps = 2, 0  # after the last step of epoch 1
    assert loop.run_training(cfg, tmp_path / "cut2", device="cpu", show_progress=False)["status"] == "time_limit"
    monkeypatch.setattr(loop, "TimeBudget", TimeBudget)
    _StopAtStep.stop_at = 3
    loop.run_training(cfg, tmp_path / "cut2", resume=True, device="cpu", show_progress=False)
    assert train_losses(tmp_path / "cut2") == pytest.approx(expected, abs=1e-6)
    assert not [e for e in read_events(tmp_path / "cut2" / "events.jsonl") if e["kind"] == "nan"]


def test_nan_guard_skips_rolls_back_then_aborts_keeping_a_finite_best(tiny_store, tmp_path):
    # epoch 1 (steps 0, 1) is clean and makes a best checkpoint; from step 2 on every loss is NaN
    cfg = tiny_cfg(
        tiny_store,
        "train.epochs=4",
        "train.nan_skip_limit=2",
        "train.nan_max_rollbacks=1",
        f"train.inject_nan_at_steps={list(range(2, 40))}",
    )
    with pytest.raises(NaNAbort, match="diverged"):
        loop.run_training(cfg, tmp_path / "nan", device="cpu", show_progress=False)
    events = read_events(tmp_path / "nan" / "events.jsonl")
    actions = [e["action"] for e in events if e["kind"] == "nan"]
    assert actions == ["skip_step", "rollback", "skip_step", "abort"]
    # `watch` shows the message beside the event's step: "step 3 · ... non-finite loss at step 2" it read before
    assert all(f"at step {e['step']}" in e["message"] for e in events if e["kind"] == "nan"), events
    assert events[-1]["kind"] == "run_end" and events[-1]["status"] == "nan_abort"
    assert events[-1]["best"]["epoch"] == 1 and math.isfinite(events[-1]["best"]["volume_dice"])
    best = load_checkpoint(checkpoint_path(tmp_path / "nan", "best"))
    assert math.isfinite(best["metrics"]["volume_dice"])
    assert finite_weights(best)
    assert not any(e.get("is_best") for e in events if e["kind"] == "epoch_end" and e["epoch"] > 1)


def test_absurd_learning_rate_aborts_and_keeps_the_best_from_before_the_divergence(tiny_store, tmp_path, recwarn):
    # Epoch 1 only skips (NaN injected at steps 0 and 1), so its validation scores the initial weights and
    # makes a finite best; from epoch 2 on, lr 1e12 diverges: rollback, divergence again, abort.
    cfg = tiny_cfg(
        tiny_store, "optim.lr=1e12", "optim.grad_clip=0.0", "train.epochs=4", "train.nan_max_rollbacks=1",
        "train.inject_nan_at_steps=[0, 1]", *SMALL_MODEL,
    )
    with pytest.raises(NaNAbort, match="diverged") as aborted:
        loop.run_training(cfg, tmp_path / "lr", device="cpu", show_progress=False)
    assert "rollbacks did not help" in str(aborted.value)
    # the first steps were skipped, so the scheduler stepped before the optimizer: by design, not worth a warning
    assert not [w for w in recwarn if "lr_scheduler.step()" in str(w.message)]
    events = read_events(tmp_path / "lr" / "events.jsonl")
    assert events[-1]["kind"] == "run_end" and events[-1]["status"] == "nan_abort"
    actions = [e["action"] for e in events if e["kind"] == "nan"]
    assert {"skip_step", "rollback"} <= set(actions) and actions[-1] == "abort" and actions.count("abort") == 1
    ends = [e for e in events if e["kind"] == "epoch_end"]
    assert ends[0]["epoch"] == 1 and ends[0]["is_best"] and math.isfinite(ends[0]["volume_dice"])
    assert len(ends) >= 2 and all(e["volume_dice"] is None and not e["is_best"] for e in ends[1:])  # diverged
    assert events[-1]["best"] == {"epoch": 1, "volume_dice": ends[0]["volume_dice"]}
    best = load_checkpoint(checkpoint_path(tmp_path / "lr", "best"))
    assert best["epoch"] == 1 and best["metrics"]["volume_dice"] == ends[0]["volume_dice"]
    assert finite_weights(best)


def test_rollback_restores_the_last_good_weights_and_cuts_the_learning_rate(tiny_store, tmp_path):
    # 4 steps per epoch; steps 6 and 7 (the last two of epoch 2) are NaN: a skip, then a rollback to the
    # end of epoch 1, undoing the updates of steps 4 and 5. Epoch 2 then validates epoch 1's weights.
    cfg = tiny_cfg(
        tiny_store, "train.epochs=3", "train.steps_per_epoch=4", "optim.scheduler='constant'", "optim.lr=1e-3",
        "train.nan_skip_limit=2", "train.nan_lr_factor=0.25", "train.inject_nan_at_steps=[6, 7]",
        *SMALL_MODEL,
    )
    result = loop.run_training(cfg, tmp_path / "rb", device="cpu", show_progress=False)
    assert result["status"] == "completed"
    events = read_events(tmp_path / "rb" / "events.jsonl")
    assert [(e["action"], e["where"], e["step"]) for e in events if e["kind"] == "nan"] == [
        ("skip_step", "loss", 7), ("rollback", "loss", 8)]
    ends = {e["epoch"]: e for e in events if e["kind"] == "epoch_end"}
    for key in ("val_loss", "volume_dice", "slice_dice", "global_dice"):  # the same weights, the same scores
        assert ends[2][key] == ends[1][key], key
    assert ends[3]["val_loss"] != ends[1]["val_loss"]  # and training goes on from there
    lrs = {e["epoch"]: e["lr"] for e in events if e["kind"] == "step"}
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] == pytest.approx(1e-3)
    assert lrs[2] == pytest.approx(0.25e-3)  # every step after the rollback
    assert {e["lr"] for e in events if e["kind"] == "step" and e["epoch"] == 2} == {lrs[2]}


def test_non_finite_gradient_with_finite_loss_skips_the_step(tiny_store, tmp_path, poisoned_loss):
    cfg = tiny_cfg(tiny_store, f"loss.name='{poisoned_loss}'", "train.epochs=1", "train.steps_per_epoch=4", *SMALL_MODEL)
    result = loop.run_training(cfg, tmp_path / "g", device="cpu", show_progress=False)
    assert result["status"] == "completed" and result["global_step"] == 4
    events = read_events(tmp_path / "g" / "events.jsonl")
    nans = [e for e in events if e["kind"] == "nan" and e["action"] != "report"]  # the guard's, not the writer's
    assert [(e["where"], e["action"], e["step"]) for e in nans] == [("grad", "skip_step", 2), ("grad", "skip_step", 3)]
    assert all(math.isfinite(e["loss"]) for e in nans)  # the loss was fine, the gradient was not
    assert nans[-1]["counts"] == {"skipped": 2, "rollbacks": 0}
    steps = [e for e in events if e["kind"] == "step"]
    assert steps and all(math.isfinite(e["loss"]) for e in steps)  # the weights never took the NaN gradient
    state = load_checkpoint(checkpoint_path(tmp_path / "g", "last"))
    assert finite_weights(state)


def test_fp16_overflow_is_left_to_the_grad_scaler(tiny_store, tmp_path, poisoned_loss):
    cfg = tiny_cfg(tiny_store, f"loss.name='{poisoned_loss}'", "train.amp='fp16'", "train.epochs=1",
                   "train.steps_per_epoch=4", "data.input_size=32", *SMALL_MODEL)
    result = loop.run_training(cfg, tmp_path / "fp16", device="cpu", show_progress=False)
    assert result["status"] == "completed"
    events = read_events(tmp_path / "fp16" / "events.jsonl")
    assert events[0]["amp"] == "fp16"
    # asked for on the CPU, where float16 autocast is very slow: it runs, and the user is told so
    assert [e for e in events if e["kind"] == "note" and "fp16 on the CPU" in e["message"]]
    # an overflow is not the guard's business (the event writer still reports the step's non-finite grad_norm)
    assert [e["action"] for e in events if e["kind"] == "nan"] == ["report", "report"]
    state = load_checkpoint(checkpoint_path(tmp_path / "fp16", "last"))
    assert state["scaler"]["scale"] == 2.0**16 / 4  # two overflows halved the initial scale twice
    assert finite_weights(state)


def test_sigterm_saves_last_and_ends_interrupted(tiny_store, tmp_path, monkeypatch):
    calls = []

    def step_then_signal(self, *a):
        calls.append(1)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(loop.ConsoleProgress, "step", step_then_signal)
    cfg = tiny_cfg(tiny_store, "train.steps_per_epoch=3")
    result = loop.run_training(cfg, tmp_path / "sig", device="cpu", show_progress=False)
    # one process stops right after the step the signal fell in (it never asks the loader, whose workers got
    # the signal too, for another batch); DDP ranks agree through the next step's flags instead
    assert result["status"] == "interrupted" and result["global_step"] == 1
    events = read_events(tmp_path / "sig" / "events.jsonl")
    assert events[-1]["status"] == "interrupted" and "SIGTERM" in events[-1]["message"]
    assert [e["which"] for e in events if e["kind"] == "checkpoint"] == ["interrupt"]
    assert load_checkpoint(checkpoint_path(tmp_path / "sig", "last"))["step_in_epoch"] == 1


@pytest.mark.parametrize("input_size", [
    64,  # the slices' own size: no resize anywhere
    32,  # resized both ways: validation and submit must still give the same masks
])
def test_validation_dice_agrees_with_evaluate_on_the_same_predictions(tiny_store, tiny_dataset, tmp_path, input_size):
    """The Dice that picks the best checkpoint is the Dice `evaluate` gives the best model's masks."""
    import json

    import numpy as np

    from liverctl.data.store import LiverStore
    from liverctl.infer.predict import RunModel, predict_cases
    from liverctl.infer.submission import write_submission
    from liverctl.train.models import load_run_model

    cfg = tiny_cfg(tiny_store, "train.epochs=1", *SMALL_MODEL, f"data.input_size={input_size}")
    loop.run_training(cfg, tmp_path / "v", device="cpu", show_progress=False)
    (end,) = [e for e in read_events(tmp_path / "v" / "events.jsonl") if e["kind"] == "epoch_end"]

    store = LiverStore.open(tiny_store)
    val = sorted(c for c, fold in store.folds().items() if fold == cfg["data"]["fold"])
    model, run_cfg = load_run_model(tmp_path / "v", "best")
    run = RunModel(run_dir=tmp_path / "v", model=model, cfg=run_cfg)
    masks = {c: p >= cfg["infer"]["threshold"] for c, p in predict_cases([run], store, val, tta="none", amp="off")}
    labels = tmp_path / "labels"
    labels.mkdir()
    for case in val:
        (labels / f"segmentation-{case}.nii.gz").symlink_to(tiny_dataset / "train" / "segmentation" / f"segmentation-{case}.nii.gz")
    write_submission(tmp_path / "val.csv", masks.items(), expected={c: m.shape[2] for c, m in masks.items()})
    result = runner.invoke(app, ["evaluate", str(tmp_path / "val.csv"), "--labels", str(labels), "--json", "-"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert 0.0 < scores["volume_dice"] < 1.0  # a partly right model: agreement is not a coincidence of extremes
    assert np.count_nonzero(np.concatenate([m.ravel() for m in masks.values()])) > 0
    for key in ("volume_dice", "slice_dice", "global_dice"):
        assert end[key] == pytest.approx(scores[key], abs=1e-9), key


def test_missing_store_and_empty_fold_fail_with_one_line(tiny_store, tmp_path):
    with pytest.raises(LiverctlError, match="no store here"):
        loop.run_training(tiny_cfg(tmp_path / "nope.zarr"), tmp_path / "a", device="cpu", show_progress=False)
    with pytest.raises(LiverctlError, match="fold 7 has no training cases"):
        loop.run_training(tiny_cfg(tiny_store, "data.fold=7"), tmp_path / "b", device="cpu", show_progress=False)
    # a set-up that failed is the command's one line, not a run: no run_start, no run_end
    assert not [e for e in read_events(tmp_path / "b" / "events.jsonl") if e["kind"] in ("run_start", "run_end")]


def test_parse_duration():
    assert parse_duration("11h") == 11 * 3600
    assert parse_duration("1h30m") == 5400
    assert parse_duration("90s") == parse_duration("1.5m") == 90
    # a number without its unit: `--time-limit 11` (hours meant) was 11 s, a run that stopped at once, exit 0
    for unitless, number in (("11", "11"), ("1h30", "30"), ("2.5", "2.5")):
        with pytest.raises(LiverctlError, match=f"--time-limit {unitless}: give {number} its unit: {number}h, "):
            parse_duration(unitless)
    with pytest.raises(LiverctlError, match="time-limit"):
        parse_duration("soon")
    for zero in ("0", "0h", "0m0s"):  # read, but no time: "cannot read '0'" was not the problem
        with pytest.raises(LiverctlError, match=f"--time-limit {zero}: give a time longer than 0"):
            parse_duration(zero)


runner = CliRunner()


def test_presets_command_lists_and_shows():
    result = runner.invoke(app, ["presets"])
    assert result.exit_code == 0 and "v3.4" in result.output and "demo" in result.output
    result = runner.invoke(app, ["presets", "show", "v5", "--set", "optim.lr=2e-4"])
    assert result.exit_code == 0 and 'name = "log_cosh_dice"' in result.output and "lr = 0.0002" in result.output


def test_cli_bad_input_is_one_line_and_non_zero(tiny_store, tmp_path):
    result = runner.invoke(app, ["presets", "show", "v3", "--set", "optim.lrr=1"])
    assert result.exit_code == 2 and "optim.lr" in result.stderr
    result = runner.invoke(app, ["train", "--preset", "nope", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and "valid presets" in result.stderr
    result = runner.invoke(app, ["train", "--resume", "ghost", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and "no run 'ghost'" in result.stderr
    result = runner.invoke(
        app, ["train", "--preset", "demo", "--store", str(tiny_store), "--set", "data.fold=9", "--runs-dir", str(tmp_path / "f")]
    )
    assert result.exit_code == 2 and "fold 9 has no training cases" in result.stderr
    assert not (tmp_path / "f").exists()  # checked before any run folder is made


@pytest.mark.parametrize("options, line", [
    (["--epochs", "2", "--set", "train.epochs=3"], "--epochs 2 and --set train.epochs=3 both set train.epochs"),
    (["--store", "other.zarr", "--set", "data.store=x.zarr"],
     "--store other.zarr and --set data.store=x.zarr both set data.store"),
])
def test_a_shortcut_and_a_set_of_the_same_key_are_refused_not_one_dropped(tmp_path, options, line):
    """`train --epochs 2 --set train.epochs=3` trained 2 epochs and said nothing of the --set; --store over
    --set data.store the same."""
    result = runner.invoke(app, ["train", "--preset", "demo", *options, "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and result.stderr == f"error: {line}; give one of them\n"
    assert not (tmp_path / "runs").exists()


def test_cli_train_then_resume_with_another_preset_is_refused(tiny_store, tmp_path):
    args = ["train", "--preset", "demo", "--runs-dir", str(tmp_path), "--name", "r", "--store", str(tiny_store), "-q"]
    sets = ["--set", "data.input_size=64", "--set", "train.steps_per_epoch=1", "--set", "train.batch_size=2"]
    result = runner.invoke(app, [*args, *sets, "--epochs", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output + str(result.exception)
    assert "completed" in result.output
    result = runner.invoke(app, ["train", "--resume", "r", "--preset", "v3", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and "made by preset 'demo'" in result.stderr
    result = runner.invoke(app, ["train", "--resume", "r", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and "already completed its 1 epoch;" in result.stderr  # not '1 epochs'
    result = runner.invoke(app, ["train", "--resume", "r", "--runs-dir", str(tmp_path), "--epochs", "2", "-q"])
    assert result.exit_code == 0, result.output + str(result.exception)
    assert read_sidecar(tmp_path / "r", "last")["epoch"] == 2
    result = runner.invoke(app, [*args, *sets])
    assert result.exit_code == 2 and "already exists" in result.stderr


def _train_command(name, runs_dir, store, *, num_workers, steps_per_epoch):
    """`liverctl train` of a tiny 3-epoch demo run, as a subprocess command line."""
    import sys

    args = [sys.executable, "-m", "liverctl.cli", "train", "--preset", "demo", "--name", name, "--runs-dir", str(runs_dir),
            "--store", str(store), "--device", "cpu", "--epochs", "3", "-q"]
    for s in ["data.input_size=64", f"data.num_workers={num_workers}", "train.batch_size=2",
              f"train.steps_per_epoch={steps_per_epoch}", "train.log_every=1"]:
        args += ["--set", s]
    return args


@pytest.mark.slow
def test_kill_9_mid_epoch_resumes_from_the_last_checkpoint(tiny_store, tmp_path):
    import os
    import subprocess
    import time

    args = _train_command("k", tmp_path, tiny_store, num_workers=1, steps_per_epoch=3)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = tmp_path / "k" / "events.jsonl"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:  # wait for a step of the second epoch
            if any(e["kind"] == "step" and e["epoch"] == 1 for e in read_events(log)):
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert read_events(log)[-1]["kind"] != "run_end"
    result = runner.invoke(app, ["train", "--resume", "k", "--runs-dir", str(tmp_path), "-q", "--device", "cpu"])
    assert result.exit_code == 0, result.output + str(result.exception)
    events = read_events(log)
    resumed = [e for e in events if e["kind"] == "run_start"][1]["resumed_from"]
    assert resumed == {"epoch": 1, "global_step": 3, "step_in_epoch": 0}  # lost at most the epoch under way
    assert events[-1]["status"] == "completed" and events[-1]["step"] == 9
    assert [e["epoch"] for e in events if e["kind"] == "epoch_end"] == [1, 2, 3]


@pytest.mark.parametrize("amp", ["bf16", pytest.param("fp16", marks=pytest.mark.slow)])  # CPU fp16 is slow
def test_mixed_precision_on_cpu_trains_finitely_and_reports_its_mode(tiny_store, tmp_path, amp):
    cfg = tiny_cfg(
        tiny_store, "train.epochs=1", "train.steps_per_epoch=1", "data.input_size=32", f"train.amp='{amp}'", "loss.name='0.7*dice + 0.3*focal'"
    )
    result = loop.run_training(cfg, tmp_path / amp, device="cpu", show_progress=False)
    events = read_events(tmp_path / amp / "events.jsonl")
    assert result["status"] == "completed" and events[0]["amp"] == amp
    state = load_checkpoint(checkpoint_path(tmp_path / amp, "last"))
    assert (state["scaler"] != {}) == (amp == "fp16")  # a GradScaler only for fp16
    assert all(math.isfinite(e["loss"]) for e in events if e["kind"] == "step")


def test_cli_missing_pretrained_weights_fail_before_any_run_folder(tiny_store, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    result = runner.invoke(app, ["train", "--preset", "v3", "--runs-dir", str(tmp_path / "runs"), "--store", str(tiny_store)])
    assert result.exit_code == 2 and "model.encoder_weights=none" in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_time_budget_refuses_an_epoch_that_would_not_fit():
    clock = [1000.0]
    budget = TimeBudget(limit_s=3600, reserve_s=30, clock=lambda: clock[0])
    assert budget.room_for_epoch()  # nothing measured yet
    clock[0] += 1500
    budget.epoch_done(1500, save_seconds=10)
    assert budget.room_for_epoch()  # 2100 s left > 1500 * 1.15 + 10 + 30
    clock[0] += 1000
    budget.epoch_done(1000, save_seconds=10)
    assert not budget.room_for_epoch()  # 1100 s left: the longest epoch (1500 s) would overrun
    assert budget.room_for_step(5.0)
    clock[0] += 1090
    assert not budget.room_for_step(5.0)  # 10 s left: stop and checkpoint now
    assert TimeBudget(None).room_for_epoch() and TimeBudget(None).room_for_step(1e9)


def test_time_budget_abandons_a_validation_that_would_not_end_in_time():
    clock = [0.0]
    budget = TimeBudget(limit_s=1000, reserve_s=30, clock=lambda: clock[0])
    clock[0] = 500.0
    watch = budget.validation_watch()
    clock[0] = 600.0  # the first batch also waited for the loader's workers: not a pace
    assert watch(1, 10)
    clock[0] = 610.0
    assert watch(2, 10)  # 8 batches of 10 s left: 92 s (with margin) + 30 s of 390 s
    clock[0] = 700.0
    assert not watch(3, 10)  # 45 s a batch: 7 more take 362 s + 30 s, only 300 s left
    late = budget.validation_watch()
    clock[0] = 985.0
    assert not late(1, 10)  # the limit is at hand after the first batch: no pace needed
    assert TimeBudget(None).validation_watch()(1, 10)


def _validation_at_400_s_a_batch(monkeypatch):
    """A fake clock for a 1000 s time limit, each validation batch taking 400 s of it and training none: the first
    validation is abandoned after its second batch. Returns the clock ([seconds]) and the real
    `validation.probabilities_at`, to put back."""
    from liverctl.train import validation

    clock = [0.0]
    monkeypatch.setattr(loop, "TimeBudget", lambda limit_s: TimeBudget(1000, clock=lambda: clock[0]))
    probabilities_at = validation.probabilities_at

    def slow_batch(*args, **kwargs):
        clock[0] += 400
        return probabilities_at(*args, **kwargs)

    monkeypatch.setattr(validation, "probabilities_at", slow_batch)
    return clock, probabilities_at


def test_the_first_validation_stops_in_time_with_the_epoch_steps_saved(tiny_store, tmp_path, monkeypatch):
    # Nothing had timed a validation before the first: a limit reached in it was overrun by the whole
    # validation and the checkpoints (the clock here: 2400 s of a 1000 s limit).
    clock, _ = _validation_at_400_s_a_batch(monkeypatch)
    result = loop.run_training(tiny_cfg(tiny_store), tmp_path / "t", device="cpu", show_progress=False)
    assert clock[0] < 1000  # abandoned after the second batch (6 in all), at 800 s
    assert result["status"] == "time_limit" and result["epochs_done"] == 0
    events = read_events(tmp_path / "t" / "events.jsonl")
    assert not [e for e in events if e["kind"] == "epoch_end"]
    assert any("no room to finish the validation of epoch 1" in e["message"] for e in events if e["kind"] == "note")
    assert [e["which"] for e in events if e["kind"] == "checkpoint"] == ["time_limit"]
    assert (events[-1]["kind"], events[-1]["status"]) == ("run_end", "time_limit")
    state = load_checkpoint(checkpoint_path(tmp_path / "t", "last"), resume=True)
    assert (state["epoch"], state["step_in_epoch"], state["epoch_losses"]["count"]) == (0, 2, 2)


def test_a_resumed_validation_the_time_limit_abandoned_has_its_epoch_line(tiny_store, tmp_path, monkeypatch, capsys):
    """`--resume` of a run whose validation `--time-limit` abandoned validates that epoch before any step: its epoch
    line is started as a normal epoch's (all its steps done), so off a terminal the validation says how far it is
    (here every batch: `pipe_progress.EVERY_SECONDS` 0) before the epoch's summary line, as a normal one does."""
    import liverctl.pipe_progress
    from liverctl.train import validation

    _, probabilities_at = _validation_at_400_s_a_batch(monkeypatch)
    assert loop.run_training(tiny_cfg(tiny_store), tmp_path / "t", device="cpu", show_progress=False)["status"] == (
        "time_limit")
    monkeypatch.setattr(validation, "probabilities_at", probabilities_at)
    monkeypatch.setattr(liverctl.pipe_progress, "EVERY_SECONDS", 0.0)
    capsys.readouterr()
    assert loop.run_training(None, tmp_path / "t", device="cpu", resume=True)["status"] == "completed"
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch 1/")]
    summary = next(i for i, line in enumerate(lines) if "train loss" in line)
    assert summary > 0 and all(" 2/2 validating " in line and " batches" in line for line in lines[:summary]), lines


def test_a_real_time_budget_ends_the_run_before_the_limit_with_a_checkpoint(tiny_store, tmp_path):
    # The budget keeps 30 s in reserve for the checkpoint, so a 33 s limit leaves room for an epoch or
    # two of this tiny run (none if setting up took over 3 s): far fewer than the 40 planned either way.
    import time

    cfg = tiny_cfg(tiny_store, "train.epochs=40", "train.steps_per_epoch=1")
    started = time.monotonic()
    result = loop.run_training(cfg, tmp_path / "t", device="cpu", time_limit_s=33, show_progress=False)
    elapsed = time.monotonic() - started
    assert result["status"] == "time_limit" and result["epochs_done"] < 40
    assert elapsed < 33
    events = read_events(tmp_path / "t" / "events.jsonl")
    assert events[-1]["kind"] == "run_end" and events[-1]["status"] == "time_limit"
    assert events[-1]["message"] == "stopped before the time limit"
    assert [e["which"] for e in events if e["kind"] == "checkpoint"][-1] == "time_limit"
    assert load_checkpoint(checkpoint_path(tmp_path / "t", "last"))["epoch"] == result["epochs_done"]


def test_cli_time_limit_is_passed_to_the_loop(tiny_store, tmp_path):
    # 10 s is less than the budget's 30 s reserve: the run must stop, checkpointed, before its first epoch
    args = ["train", "--preset", "demo", "--runs-dir", str(tmp_path), "--name", "t", "--store", str(tiny_store),
            "-q", "--device", "cpu", "--epochs", "3", "--time-limit", "10s",
            "--set", "data.input_size=64", "--set", "train.steps_per_epoch=1", "--set", "train.batch_size=2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + str(result.exception)
    # no best yet: no '(epoch None)' after the dash
    assert f"time_limit: 0 epochs, best volume Dice - in {tmp_path / 't'}" in result.output
    events = read_events(tmp_path / "t" / "events.jsonl")
    assert events[-1]["kind"] == "run_end" and events[-1]["status"] == "time_limit"
    assert not any(e["kind"] in ("step", "epoch_end") for e in events)
    assert read_sidecar(tmp_path / "t", "last")["epoch"] == 0
    result = runner.invoke(app, ["train", "--preset", "demo", "--runs-dir", str(tmp_path), "--name", "u",
                                 "--store", str(tiny_store), "--time-limit", "soon"])
    assert result.exit_code == 2 and "--time-limit: cannot read 'soon'" in result.stderr


def test_a_disk_that_fills_while_writing_a_checkpoint_fails_the_run_in_one_line(tiny_store, tmp_path, monkeypatch):
    """The CI machine's disk filled inside torch.save and the run died with torch's own RuntimeError."""
    fill_disk(monkeypatch, only=lambda path: ".pt." in path)  # the checkpoints' temporary files
    args = ["train", "--preset", "demo", "--runs-dir", str(tmp_path), "--name", "full", "--store", str(tiny_store),
            "-q", "--device", "cpu", "--epochs", "1", "--set", "data.input_size=64", "--set", "data.num_workers=0",
            "--set", "train.steps_per_epoch=1", "--set", "train.batch_size=2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output + str(result.exception)
    line = result.stderr.strip()
    assert "\n" not in line and "no space left on " in line and "while writing the checkpoint" in line, line
    assert "inline_container" not in line
    end = read_events(tmp_path / "full" / "events.jsonl")[-1]
    assert end["kind"] == "run_end" and end["status"] == "failed" and "no space left on " in end["message"]
    assert not list((tmp_path / "full" / "checkpoints").glob("*.pt*"))


def test_a_run_whose_checkpoints_cannot_fit_is_refused_before_its_first_step(tiny_store, tmp_path, monkeypatch):
    """Refused before the run folder exists (train), or at the loop's start (a resume, a fold), in one line."""
    import shutil

    from liverctl.config import resolve_config
    from liverctl.runs.checkpoint import checkpoint_bytes
    from liverctl.train.models import build_model
    from liverctl.train.session import build_optimizer

    sets = ["data.input_size=64", "data.num_workers=0", "train.steps_per_epoch=1", "train.batch_size=2", *SMALL_NET]
    cfg = resolve_config("demo", sets, {"data.store": str(tiny_store)})
    model = build_model(cfg, pretrained=False)
    each = checkpoint_bytes(model, build_optimizer(cfg, model.parameters()))
    real_usage = shutil.disk_usage

    def free(n):
        monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=n))

    def train(name, *more):
        args = ["train", "--preset", "demo", "--runs-dir", str(tmp_path), "--name", name, "--store", str(tiny_store),
                "-q", "--device", "cpu", "--epochs", "1", *more]
        return runner.invoke(app, args + [arg for item in sets for arg in ("--set", item)])

    free(3 * each - 1)  # best, last and the one being written
    result = train("small")
    assert result.exit_code == 2, result.output + str(result.exception)
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: {tmp_path / 'small'}: this run's checkpoints (best, last"), line
    assert "free; free some space or give --runs-dir a folder on a larger disk" in line
    assert not (tmp_path / "small").exists()

    free(3 * each + (1 << 20))
    result = train("enough")
    assert result.exit_code == 0, result.output + str(result.exception)

    # a resume replaces the run's two checkpoints: one more is all it needs; the loop's own check says so
    free(each // 2)
    with pytest.raises(LiverctlError, match="this run's checkpoints .* need about "):
        loop.run_training(apply_epochs(read_config(tmp_path / "enough" / "config.toml"), 2), tmp_path / "enough",
                          resume=True, device="cpu", show_progress=False)
    events = read_events(tmp_path / "enough" / "events.jsonl")
    assert events[-1]["kind"] == "run_end" and events[-1]["status"] == "failed"
    assert events[-2]["kind"] == "run_start" and events[-2]["resumed_from"]["epoch"] == 1
    free(each + (1 << 20))
    result = loop.run_training(apply_epochs(read_config(tmp_path / "enough" / "config.toml"), 2),
                               tmp_path / "enough", resume=True, device="cpu", show_progress=False)
    assert result["status"] == "completed" and result["epochs_done"] == 2


def apply_epochs(cfg, epochs):
    cfg["train"]["epochs"] = epochs
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "workers"), [(signal.SIGINT, 2), (signal.SIGTERM, 2), (signal.SIGINT, 0)])
def test_a_signal_to_the_process_group_saves_and_ends_interrupted(tiny_store, tmp_path, sig, workers):
    """Ctrl-C in a terminal (SIGINT) and `timeout` / `kill -- -PGID` (SIGTERM) signal the workers too; with
    data.num_workers=0 the batches are loaded in the trainer's own process, between its steps."""
    import os
    import subprocess
    import time

    args = _train_command("c", tmp_path, tiny_store, num_workers=workers, steps_per_epoch=50)
    proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = tmp_path / "c" / "events.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(e["kind"] == "step" for e in read_events(log)):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    os.killpg(proc.pid, sig)  # every process of the group gets it, the loader's workers too
    assert proc.wait(timeout=120) == 130, proc.stderr.read().decode()[-2000:]
    events = read_events(log)
    assert events[-1]["kind"] == "run_end" and events[-1]["status"] == "interrupted"
    assert load_checkpoint(checkpoint_path(tmp_path / "c", "last"))["step_in_epoch"] >= 1


# --- one writer per run, plain names, honest exit codes ------------------------------------------------


def _hold_lock(run_dir):
    """A separate process holding the run's lock (as a running `train` does) until killed."""
    import subprocess
    import sys
    import time

    code = ("import sys, time; from liverctl.runs.folder import RunLock; "
            "lock = RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    time.sleep(0.05)
    return proc


def test_a_second_writer_is_refused_at_once_naming_the_holder(tiny_store, tmp_path):
    import socket

    args = ["train", "--preset", "demo", "--runs-dir", str(tmp_path), "--name", "twin", "--store", str(tiny_store),
            "-q", "--device", "cpu", "--epochs", "1", "--set", "data.input_size=64", "--set", "train.steps_per_epoch=1",
            "--set", "train.batch_size=2", *(arg for item in SMALL_NET for arg in ("--set", item))]
    holder = _hold_lock(tmp_path / "twin")
    try:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert f"being written by pid {holder.pid} on {socket.gethostname()} since" in result.stderr
        assert sorted(p.name for p in (tmp_path / "twin").iterdir()) == [".lock"]  # nothing written
        result = runner.invoke(app, ["train", "--resume", "twin", "--runs-dir", str(tmp_path)])  # no last.pt yet
        assert result.exit_code == 2 and f"being written by pid {holder.pid}" in result.stderr
    finally:
        holder.kill()  # what kill -9 does: the kernel drops the lock with the process
        holder.wait()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + str(result.exception)
    holder = _hold_lock(tmp_path / "twin")
    try:
        before = (tmp_path / "twin" / "events.jsonl").read_bytes()
        result = runner.invoke(app, ["train", "--resume", "twin", "--runs-dir", str(tmp_path), "--epochs", "2", "-q"])
        assert result.exit_code == 2 and f"pid {holder.pid}" in result.stderr
        assert (tmp_path / "twin" / "events.jsonl").read_bytes() == before
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_two_trainers_on_one_run_the_second_is_refused_and_the_first_unharmed(tiny_store, tmp_path):
    import subprocess
    import time

    args = _train_command("twin", tmp_path, tiny_store, num_workers=0, steps_per_epoch=2)
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = tmp_path / "twin" / "events.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(e["kind"] == "run_start" for e in read_events(log)):
        assert first.poll() is None, first.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    second = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2 and f"being written by pid {first.pid}" in second.stderr
    assert first.wait(timeout=600) == 0, first.stderr.read().decode()[-2000:]
    events = read_events(log)
    assert [e["kind"] for e in events].count("run_start") == 1 and events[-1]["status"] == "completed"
    assert [e["seq"] for e in events] == list(range(len(events)))


@pytest.mark.parametrize("name", ["..", ".", "../escape", "a/b", "/abs"])
def test_name_must_be_a_plain_name(tiny_store, tmp_path, name):
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", "--preset", "demo", "--runs-dir", str(runs), "--name", name, "--store", str(tiny_store)])
    assert result.exit_code == 2 and "plain name" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing made, inside --runs-dir or out of it


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_learning_rate_is_refused_before_any_run_folder(tiny_store, tmp_path, value):
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", "--preset", "demo", "--runs-dir", str(runs), "--store", str(tiny_store),
                                 "--set", f"optim.lr={value}"])
    assert result.exit_code == 2 and "optim.lr" in result.stderr and "finite" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not runs.exists()


def test_a_run_that_ends_without_a_finite_checkpoint_exits_non_zero(tiny_store, tmp_path, monkeypatch):
    # every validation non-finite (what a diverged model gives), rollbacks to spare: the loop runs to its end
    from liverctl.train.session import Session

    nan = float("nan")
    monkeypatch.setattr(Session, "validate", lambda self, keep_going=None: {
        "val_loss": nan, "volume_dice": nan, "slice_dice": nan, "global_dice": nan})
    args = ["train", "--preset", "demo", "--runs-dir", str(tmp_path), "--name", "div", "--store", str(tiny_store), "-q",
            "--device", "cpu", "--epochs", "2", "--set", "data.input_size=64", "--set", "train.steps_per_epoch=1",
            "--set", "train.batch_size=2", "--set", "train.nan_max_rollbacks=5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 3, result.output
    assert "without a finite checkpoint" in result.stderr and "completed" not in result.output
    events = read_events(tmp_path / "div" / "events.jsonl")
    assert events[-1]["kind"] == "run_end" and events[-1]["status"] == "nan_abort"
    assert not (tmp_path / "div" / "checkpoints").exists()


def test_a_kill_while_writing_best_redoes_that_epoch_on_resume(tiny_store, tmp_path, monkeypatch):
    real_save = loop.save_checkpoint

    def killed_while_writing_best(run_dir, which, state):
        if which == "best" and state["epoch"] == 2:
            (tmp_path / "k" / "checkpoints" / ".best.pt.x1.tmp").write_bytes(b"half")
            raise KeyboardInterrupt  # stands in for the kill: nothing after this point runs
        return real_save(run_dir, which, state)

    monkeypatch.setattr(loop, "save_checkpoint", killed_while_writing_best)
    cfg = tiny_cfg(tiny_store, "train.epochs=2")
    with pytest.raises(KeyboardInterrupt):
        loop.run_training(cfg, tmp_path / "k", device="cpu", show_progress=False)
    assert read_sidecar(tmp_path / "k", "last")["epoch"] == 1  # best is written first, last commits the epoch
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    result = loop.run_training(cfg, tmp_path / "k", resume=True, device="cpu", show_progress=False)
    assert result["status"] == "completed" and result["epochs_done"] == 2
    assert sorted(p.name for p in (tmp_path / "k" / "checkpoints").iterdir()) == ["best.json", "best.pt", "last.json", "last.pt"]
    ends = {e["epoch"] for e in read_events(tmp_path / "k" / "events.jsonl") if e["kind"] == "epoch_end"}
    assert ends == {1, 2}


def test_a_failed_run_ends_its_loader_workers_before_its_error_goes_on(tiny_store, tmp_path, monkeypatch):
    # the traceback of the failure holds the training loader's iterator until the interpreter's exit, where
    # multiprocessing SIGTERMed the worker it found still running: it finished its batch first (10 s), and a
    # failed torchrun rank exited that much later, so the other ranks saw its end late
    from liverctl.data import loaders

    made, workers = [], []
    make_train_loader = loaders.make_train_loader

    def keep(*args, **kwargs):
        made.append(make_train_loader(*args, **kwargs))
        return made[-1]

    def fails_at_step_1(s, *args, **kwargs):
        if s.global_step == 1:
            workers.extend(made[0]._iterator._workers)
            raise RuntimeError("out of memory (this run's own failure)")
        return guarded_step(s, *args, **kwargs)

    guarded_step = loop.guarded_step
    monkeypatch.setattr(loaders, "make_train_loader", keep)
    monkeypatch.setattr(loop, "guarded_step", fails_at_step_1)
    with pytest.raises(RuntimeError, match="own failure") as failure:
        loop.run_training(tiny_cfg(tiny_store), tmp_path / "f", device="cpu", show_progress=False)
    assert failure.traceback  # still held, with the loop's frames
    assert workers and not any(w.is_alive() for w in workers)
    assert read_events(tmp_path / "f" / "events.jsonl")[-1]["status"] == "failed"

"""Starting a run from the train command's request (liverctl.train.start): the resume rules, the run
folder of each torchrun rank, the checks before any folder exists. The loop itself is replaced by a
stand-in here (tests/train/test_train.py trains for real)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from liverctl.config import resolve_config, write_config
from liverctl.errors import LiverctlError
from liverctl.runs.folder import checkpoint_path
from liverctl.train import loop, start
from liverctl.train.start import TrainRequest, resumed_config, train_run

TINY = ("data.input_size=64", "train.steps_per_epoch=1", "train.batch_size=2")


def _fake_run(tmp_path: Path, *, epochs_done: int, epochs: int = 2, store: Path | None = None) -> Path:
    """A run folder as training leaves it: config.toml and checkpoints/last.pt + last.json."""
    run_dir = tmp_path / "r"
    cfg = resolve_config("demo", [f"train.epochs={epochs}", *TINY], {"data.store": str(store)} if store else {})
    run_dir.mkdir()
    write_config(cfg, run_dir / "config.toml")
    last = checkpoint_path(run_dir, "last")
    last.parent.mkdir()
    last.write_bytes(b"not read here")
    last.with_suffix(".json").write_text(json.dumps({"epoch": epochs_done, "step_in_epoch": 0}))
    return run_dir


@pytest.fixture
def fake_training(monkeypatch):
    """loop.run_training replaced: records its arguments and whether the run's lock was held."""
    calls = []

    def run_training(cfg, run_dir, **kwargs):
        calls.append({"cfg": cfg, "run_dir": Path(run_dir), "locked": (Path(run_dir) / ".lock").exists(), **kwargs})
        if kwargs.get("on_start") is not None:  # as the real one does once its set-up succeeded
            kwargs["on_start"]()
        return {"status": "completed", "best": {"epoch": 1, "volume_dice": 0.5}, "epochs_done": 1,
                "global_step": 1, "run_dir": str(run_dir)}

    monkeypatch.setattr(loop, "run_training", run_training)
    # a resume reads last.pt before it announces the run; these fake runs' last.pt is not a checkpoint
    monkeypatch.setattr(start, "load_checkpoint", lambda path, **kwargs: {"read": Path(path)})
    return calls


def test_resume_applies_the_new_overrides_to_the_saved_config(tmp_path):
    run_dir = _fake_run(tmp_path, epochs_done=2)
    request = TrainRequest(resume="r", runs_dir=tmp_path, sets=("optim.lr=3e-4",), values={"train.epochs": 5})
    cfg = resumed_config(request, run_dir)
    assert cfg["train"]["epochs"] == 5 and cfg["optim"]["lr"] == 3e-4
    assert cfg["data"]["input_size"] == 64  # what the run was made with stays


def test_resume_refuses_another_preset_and_a_finished_run(tmp_path):
    run_dir = _fake_run(tmp_path, epochs_done=2)
    with pytest.raises(LiverctlError, match="made by preset 'demo', not 'v3'"):
        resumed_config(TrainRequest(preset="v3", resume="r", runs_dir=tmp_path), run_dir)
    with pytest.raises(LiverctlError, match=r"already completed its 2 epochs; continue it with --epochs N \(N > 2\)"):
        resumed_config(TrainRequest(resume="r", runs_dir=tmp_path), run_dir)
    with pytest.raises(LiverctlError, match="unknown config key 'train.epoch'"):
        resumed_config(TrainRequest(resume="r", runs_dir=tmp_path, sets=("train.epoch=9",)), run_dir)


def test_a_resumed_run_trains_under_its_lock_from_its_last_checkpoint(tiny_store, tmp_path, fake_training):
    _fake_run(tmp_path, epochs_done=1, store=tiny_store)
    started = []
    result = train_run(TrainRequest(resume="r", runs_dir=tmp_path, device="cpu", time_limit_s=60.0, show_progress=False),
                       on_start=lambda run_dir, cfg: started.append(run_dir))
    (call,) = fake_training
    assert call["run_dir"] == tmp_path / "r" and call["resume"] and call["locked"]
    assert call["device"] == "cpu" and call["time_limit_s"] == 60.0 and call["show_progress"] is False
    assert started == [tmp_path / "r"] and result["is_main"] and result["status"] == "completed"
    assert call["resume_state"] == {"read": checkpoint_path(tmp_path / "r", "last")}  # read once, handed on


def test_a_resume_from_another_folder_says_whose_relative_store_is_missing(tiny_store, tmp_path, monkeypatch,
                                                                          fake_training):
    """`train --resume runs/x` from another folder, the run's data.store being the default store/liver.zarr,
    said "no store here; create one with `liverctl ingest`" of the store beside the folder it was trained in."""
    _fake_run(tmp_path, epochs_done=1)  # data.store: store/liver.zarr, as the defaults have it
    monkeypatch.chdir(tmp_path)
    request = TrainRequest(resume="r", runs_dir=tmp_path, device="cpu", show_progress=False)
    with pytest.raises(LiverctlError, match=r"^store/liver.zarr: no store here \(the data.store of run r, relative "
                                            r"to the folder the run was trained in\); pass --store PATH$"):
        train_run(request)
    assert fake_training == []
    request = TrainRequest(resume="r", runs_dir=tmp_path, device="cpu", show_progress=False,
                           values={"data.store": str(tiny_store)})
    train_run(request)  # --store given: that store
    assert fake_training[0]["cfg"]["data"]["store"] == str(tiny_store)
    from liverctl.runs.events import EventWriter

    EventWriter(tmp_path / "r", "r").emit("run_start", store=str(tiny_store.absolute()))  # as training records it
    train_run(TrainRequest(resume="r", runs_dir=tmp_path, device="cpu", show_progress=False))
    assert fake_training[1]["cfg"]["data"]["store"] == str(tiny_store.absolute())  # found where it was trained


def test_a_damaged_last_checkpoint_is_refused_before_the_resume_is_announced(tiny_store, tmp_path, monkeypatch):
    run_dir = _fake_run(tmp_path, epochs_done=1, store=tiny_store)  # last.pt holds "not read here"
    (run_dir / "events.jsonl").write_text("")
    monkeypatch.setattr(loop, "run_training", lambda *a, **k: pytest.fail("training started"))
    started = []
    with pytest.raises(LiverctlError) as info:
        train_run(TrainRequest(resume="r", runs_dir=tmp_path, device="cpu", show_progress=False),
                  on_start=lambda run_dir, cfg: started.append(run_dir))
    assert str(info.value).startswith(str(checkpoint_path(run_dir, "last")))
    assert started == [] and (run_dir / "events.jsonl").read_text() == ""


def test_a_new_run_is_checked_then_made_and_locked(tiny_store, tmp_path, fake_training):
    request = TrainRequest(preset="demo", sets=TINY, values={"data.store": str(tiny_store), "train.epochs": 1},
                           name="n", runs_dir=tmp_path / "runs")
    result = train_run(request)
    (call,) = fake_training
    assert call["run_dir"] == tmp_path / "runs" / "n" and call["locked"] and not call["resume"]
    assert call["cfg"] == resolve_config("demo", TINY, {"data.store": str(tiny_store), "train.epochs": 1})
    assert result["is_main"] and call["notes"] == ()
    (tmp_path / "runs" / "n" / "events.jsonl").write_text("")  # a run killed before its first checkpoint
    train_run(request)  # starts over under its name, and says so
    assert fake_training[1]["notes"] == ("run 'n' had ended before its first checkpoint (killed, stopped or "
                                         "failed), so there was nothing to continue from: its log was removed and "
                                         "it starts over under its name",)
    last = tmp_path / "runs" / "n" / "checkpoints" / "last.pt"  # what a run that trained leaves
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    with pytest.raises(LiverctlError, match="already exists"):
        train_run(request)
    assert len(fake_training) == 2


def test_preflight_fails_before_any_folder_exists(tiny_store, tmp_path, fake_training):
    runs = tmp_path / "runs"
    with pytest.raises(LiverctlError, match="fold 9 has no training cases"):
        train_run(TrainRequest(preset="demo", values={"data.store": str(tiny_store), "data.fold": 9}, runs_dir=runs))
    with pytest.raises(LiverctlError, match="give --preset NAME"):
        train_run(TrainRequest(runs_dir=runs))
    with pytest.raises(LiverctlError, match="PSPNet / resnet18 with model.encoder_depth=5 gives 16x16 logits"):
        train_run(TrainRequest(preset="demo", sets=(*TINY, "model.arch='PSPNet'"),
                               values={"data.store": str(tiny_store)}, runs_dir=runs))
    assert not runs.exists() and not fake_training


@pytest.mark.parametrize("fold", [9, -1])
def test_a_wrong_fold_is_refused_before_torch_is_imported(tiny_store, fold):
    """A --set data.fold=N the store lacks was refused only after preflight's device and loss checks had imported
    torch (4-5 s to the line on a 4-case store, under 1 s now); the store and its fold are checked first."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from liverctl.config import resolve_config\n"
        "from liverctl.errors import LiverctlError\n"
        "from liverctl.train.start import preflight\n"
        f"cfg = resolve_config('demo', [], {{'data.store': {str(tiny_store)!r}, 'data.fold': {fold}}})\n"
        "try:\n"
        "    preflight(cfg, 'cpu')\n"
        "except LiverctlError as exc:\n"
        "    print(exc)\n"
        "print('torch imported' if 'torch' in sys.modules else 'no torch')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    refusal, torch = out.splitlines()
    assert refusal.startswith(f"fold {fold} ") and ": choose one with --set data.fold=" in refusal, out
    assert torch == "no torch"


def test_under_torchrun_a_new_run_needs_a_name_and_other_ranks_neither_lock_nor_report(
        tiny_store, tmp_path, fake_training, monkeypatch):
    runs = tmp_path / "runs"
    values = {"data.store": str(tiny_store)}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(LiverctlError, match="under torchrun give --name"):
        train_run(TrainRequest(preset="demo", values=values, runs_dir=runs))
    assert not runs.exists()
    monkeypatch.setenv("RANK", "1")
    started = []
    result = train_run(TrainRequest(preset="demo", values=values, name="ddp", runs_dir=runs),
                       on_start=lambda run_dir, cfg: started.append(run_dir))
    (call,) = fake_training
    assert call["run_dir"] == runs / "ddp" and not call["locked"]  # rank 0 makes and locks the folder
    assert not started and not result["is_main"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        # each of these failed only in the loop's set-up, after the run folder was made and had taken the name
        ({"device": "garbage"}, "--device must be auto, cpu, cuda, cuda:N or mps, got 'garbage'"),
        ({"sets": ("loss.name=garbage",)}, "loss.name: unknown loss 'garbage'"),
        ({"sets": ("optim.scheduler=cosin",)}, "optim.scheduler: unknown 'cosin'"),
        ({"sets": ("infer.tta=hflipp",)}, "infer.tta: unknown TTA mode 'hflipp'"),
        ({"sets": ("post.mode=largestt",)}, "post.mode: unknown post-processing 'largestt'"),
        ({"sets": ("train.batch_size=500", "train.steps_per_epoch=0")}, "train.batch_size 500 is larger than the"),
        # its first batch ended in a loader worker's shared-memory traceback, after the run was announced
        ({"sets": ("data.input_size=1048576",)}, r"a batch of \d+ slices at data.input_size 1048576 takes at least .* more "
                                                 "than this machine's"),
    ],
)
def test_what_set_up_would_refuse_is_refused_before_any_folder_exists(tiny_store, tmp_path, fake_training,
                                                                       change, words):
    runs = tmp_path / "runs"
    request = TrainRequest(preset="demo", sets=(*TINY, *change.get("sets", ())), values={"data.store": str(tiny_store)},
                           device=change.get("device", "cpu"), name="n", runs_dir=runs)
    with pytest.raises(LiverctlError, match=words):
        train_run(request)
    assert not runs.exists() and not fake_training


@pytest.mark.parametrize(("content", "words"), [(None, "encoder weights file not found"),
                                               (b"not a checkpoint", "encoder weights"),
                                               ({}, "encoder weights file holds no tensors")])
def test_a_bad_local_weights_file_is_refused_before_any_folder_exists(tiny_store, tmp_path, fake_training, content,
                                                                      words):
    """model.encoder_weights_path was read only once the run folder existed and the run had been announced."""
    import torch

    path = tmp_path / "encoder.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    runs = tmp_path / "runs"
    request = TrainRequest(preset="demo", sets=(*TINY, f"model.encoder_weights_path='{path}'"),
                           values={"data.store": str(tiny_store)}, device="cpu", name="n", runs_dir=runs)
    with pytest.raises(LiverctlError, match=words) as info:
        train_run(request)
    assert str(info.value).startswith(str(path))
    assert not runs.exists() and not fake_training


def test_a_new_run_that_fails_before_it_starts_leaves_its_name_free(tiny_store, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    request = TrainRequest(preset="demo", sets=TINY, values={"data.store": str(tiny_store)}, name="n", runs_dir=runs)

    def failing_set_up(cfg, run_dir, **kwargs):  # what the loop leaves when its set-up fails: run_end alone
        (Path(run_dir) / "events.jsonl").write_text('{"kind": "run_end", "status": "failed"}\n')
        raise LiverctlError("the set-up failed")

    monkeypatch.setattr(loop, "run_training", failing_set_up)
    with pytest.raises(LiverctlError, match="the set-up failed"):
        train_run(request)
    assert [p.name for p in (runs / "n").iterdir()] == [".lock"]  # free: check_fresh takes it
    with pytest.raises(LiverctlError, match="the set-up failed"):  # not "run 'n' already exists"
        train_run(request)

    def failing_run(cfg, run_dir, **kwargs):  # a run that started (config.toml) keeps its record
        write_config(cfg, Path(run_dir) / "config.toml")
        (Path(run_dir) / "events.jsonl").write_text('{"kind": "run_start"}\n{"kind": "run_end"}\n')
        raise LiverctlError("the first step failed")

    monkeypatch.setattr(loop, "run_training", failing_run)
    with pytest.raises(LiverctlError, match="the first step failed"):
        train_run(request)
    assert sorted(p.name for p in (runs / "n").iterdir()) == [".lock", "config.toml", "events.jsonl"]


def test_a_model_too_large_to_build_is_one_line_before_any_folder_exists(tiny_store, tmp_path, fake_training):
    # 2 * 10**8 + 1 input channels: smp's first convolution asks the CPU for terabytes (a RuntimeError traceback)
    runs = tmp_path / "runs"
    with pytest.raises(LiverctlError, match=r"cannot be built for 200000001 input channels \(data.context=100000000\)"):
        train_run(TrainRequest(preset="demo", sets=(*TINY, "data.context=100000000"),
                               values={"data.store": str(tiny_store)}, device="cpu", runs_dir=runs))
    assert not runs.exists() and not fake_training


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("model.encoder=resnet34", "model.encoder cannot change on resume .*'resnet18', not 'resnet34'"),
        ("data.context=2", "data.context cannot change on resume .*1, not 2"),
        ("model.decoder_channels=[16, 16, 8, 8, 8]", "model.decoder_channels cannot change on resume"),
        # AdamW's state loaded into SGD without complaint, then the next step died in a KeyError after
        # config.toml had been rewritten with sgd: every later resume of the run failed the same way
        ("optim.name=sgd", "optim.name cannot change on resume .*'adamw', not 'sgd'"),
    ],
)
def test_resume_refuses_a_change_its_checkpoint_cannot_follow(tmp_path, override, words):
    run_dir = _fake_run(tmp_path, epochs_done=1)
    with pytest.raises(LiverctlError, match=words):
        resumed_config(TrainRequest(resume="r", runs_dir=tmp_path, sets=(override,)), run_dir)
    cfg = resumed_config(TrainRequest(resume="r", runs_dir=tmp_path, sets=("optim.lr=3e-4", "data.input_size=128")),
                         run_dir)  # what the checkpoint does not fix may change
    assert cfg["optim"]["lr"] == 3e-4 and cfg["data"]["input_size"] == 128


def test_resume_refuses_a_new_name(tmp_path):
    run_dir = _fake_run(tmp_path, epochs_done=1)
    with pytest.raises(LiverctlError, match="--resume r continues the run 'r'; --name cannot rename it"):
        resumed_config(TrainRequest(resume="r", name="other", runs_dir=tmp_path), run_dir)


@pytest.mark.parametrize(
    ("change", "words"),
    [({"device": "garbage"}, "--device must be"), ({"values": {"data.store": "/nowhere/liver.zarr"}}, "no store here"),
     ({"sets": ("loss.name=dicee",)}, "unknown loss 'dicee'"),
     # check_model ran for new runs only: the model could not take its first batch, after the log was told
     ({"sets": ("train.batch_size=1", "data.input_size=32")}, r"cannot train on a batch of 1 of 32x32 slices .*; it "
                                                             "takes data.input_size 64 and more")],
)
def test_a_resume_that_cannot_start_leaves_the_run_as_it_was(tiny_store, tmp_path, fake_training, change, words):
    # these failed in the loop's set-up, which appended a run_end "failed" to an interrupted run's log
    run_dir = _fake_run(tmp_path, epochs_done=1, store=tiny_store)
    before = sorted((p.name, p.read_bytes()) for p in run_dir.rglob("*") if p.is_file())
    request = TrainRequest(resume="r", runs_dir=tmp_path, device=change.get("device", "cpu"),
                           sets=change.get("sets", ()), values=change.get("values", {}))
    with pytest.raises(LiverctlError, match=words):
        train_run(request)
    assert not fake_training
    assert sorted((p.name, p.read_bytes()) for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock") == [
        x for x in before if x[0] != ".lock"]


def _read_only(folder: Path):
    """tempfile.TemporaryFile as a read-only mount (/kaggle/input) answers in `folder` (chmod does not stop root)."""
    import errno
    import tempfile

    real = tempfile.TemporaryFile

    def temporary_file(*args, **kwargs):
        if Path(kwargs.get("dir", "")) == folder:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, **kwargs)

    return temporary_file


def test_a_run_in_a_read_only_folder_is_refused_with_the_copy_to_resume(tiny_store, tmp_path, fake_training,
                                                                          monkeypatch):
    """`train --resume /kaggle/input/runs-ds/x` (a teammate's run attached read-only) printed
    'x/.lock (in ...): read-only file system; point the command at a folder you can write to': no option points
    a resume elsewhere. Now it is refused before anything is read, with the copy to make and resume instead."""
    import tempfile

    run_dir = _fake_run(tmp_path, epochs_done=1, store=tiny_store)
    monkeypatch.setattr(tempfile, "TemporaryFile", _read_only(run_dir))
    runs = tmp_path / "working" / "runs"
    with pytest.raises(LiverctlError) as refused:
        train_run(TrainRequest(resume=str(run_dir), runs_dir=runs, device="cpu", show_progress=False))
    assert str(refused.value) == (
        f"{run_dir}: --resume continues a run in its own folder, and this one cannot be written (Read-only file "
        f"system); copy it to a folder you can write to and resume the copy: `mkdir -p {runs} && cp -r {run_dir} "
        f"{runs / 'r'} && liverctl train --resume {runs / 'r'}`")
    # `cp -r X runs/` into a runs/ that already held an 'r' merged the two runs' files: the copy takes a free name
    (runs / "r").mkdir(parents=True)
    with pytest.raises(LiverctlError, match=rf"`mkdir -p {runs} && cp -r {run_dir} {runs / 'r-copy'} && liverctl "
                                            rf"train --resume {runs / 'r-copy'}`$"):
        train_run(TrainRequest(resume=str(run_dir), runs_dir=runs, device="cpu", show_progress=False))
    # named under a read-only --runs-dir, the copy goes to runs/ where the command runs
    with pytest.raises(LiverctlError, match=r"`mkdir -p runs && cp -r .* runs/r && liverctl train --resume runs/r`$"):
        train_run(TrainRequest(resume="r", runs_dir=tmp_path, device="cpu", show_progress=False))
    assert fake_training == [] and not (run_dir / ".lock").exists()


def test_an_experiment_in_a_read_only_folder_is_refused_with_the_copy_to_resume(tmp_path, monkeypatch):
    import tempfile

    from liverctl.experiment import train as experiment_train
    from liverctl.experiment.folder import SUMMARY_FILE

    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    (exp_dir / SUMMARY_FILE).write_text("{}")
    monkeypatch.setattr(tempfile, "TemporaryFile", _read_only(exp_dir))
    monkeypatch.setattr(experiment_train, "resume_experiment", lambda *args: pytest.fail("resumed in place"))
    with pytest.raises(LiverctlError, match=r"--resume continues an experiment in its own folder, and this one "
                                            r"cannot be written \(Read-only file system\)"):
        experiment_train.train_experiment(TrainRequest(resume=str(exp_dir), runs_dir=tmp_path / "runs"))

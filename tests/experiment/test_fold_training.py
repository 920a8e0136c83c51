"""The rules of `train --folds` / `train --resume EXPERIMENT` (liverctl.experiment.train), checked before
anything trains; the experiment end to end is in test_experiment.py."""

from __future__ import annotations

import pytest

from liverctl.errors import LiverctlError
from liverctl.experiment.folder import SUMMARY_FILE
from liverctl.experiment.train import train_experiment, wants_experiment
from liverctl.train.start import TrainRequest


@pytest.fixture
def runs(tmp_path):
    """runs/cv: an experiment folder; runs/plain: a run folder."""
    (tmp_path / "cv").mkdir()
    (tmp_path / "cv" / SUMMARY_FILE).write_text("{}")
    (tmp_path / "plain").mkdir()
    return tmp_path


def test_an_experiment_is_wanted_for_folds_or_for_resuming_an_experiment_folder(runs):
    assert wants_experiment(TrainRequest(preset="demo", folds="all", runs_dir=runs))
    assert wants_experiment(TrainRequest(resume="cv", runs_dir=runs))
    assert wants_experiment(TrainRequest(resume=str(runs / "cv")))  # a path works from anywhere
    assert not wants_experiment(TrainRequest(resume="plain", runs_dir=runs))
    assert not wants_experiment(TrainRequest(preset="demo", runs_dir=runs))


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (dict(resume="cv", folds="all"), "--folds starts a new experiment and --resume continues one"),
        (dict(resume="plain", folds="0"), "--folds starts a new experiment and --resume continues one"),
        (dict(resume="cv", values={"train.epochs": 3}), "cannot change an experiment on --resume"),
        (dict(resume="cv", sets=("optim.lr=1e-3",)), "cannot change an experiment on --resume"),
        (dict(folds="all"), "give --preset NAME with --folds"),
        (dict(resume="plain"), "no experiment 'plain'"),
    ],
)
def test_conflicting_requests_are_refused_before_anything_runs(runs, request_, message):
    with pytest.raises(LiverctlError, match=message):
        train_experiment(TrainRequest(runs_dir=runs, **request_))
    assert sorted(p.name for p in runs.iterdir()) == ["cv", "plain"]
    assert [p.name for p in (runs / "cv").iterdir()] == [SUMMARY_FILE]


def test_an_experiment_whose_folds_checkpoints_cannot_fit_is_refused_before_its_folder_exists(
    tiny_store, tmp_path, monkeypatch
):
    import shutil

    from liverctl.config import resolve_config
    from liverctl.data.store import LiverStore
    from liverctl.experiment.folder import store_folds
    from liverctl.experiment.train import start_experiment
    from liverctl.train.start import check_model

    cfg = resolve_config("demo", ["data.input_size=64"], {"data.store": str(tiny_store)})
    each, (folds, _) = check_model(cfg), store_folds(LiverStore.open(tiny_store))
    assert folds >= 2
    real_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=(2 * folds + 1) * each - 1))
    with pytest.raises(LiverctlError) as info:
        start_experiment(cfg, tmp_path, "cv", "all")
    message = str(info.value)
    assert message.startswith(f"{tmp_path}: the checkpoints of {folds} runs (best and last of each, and the one"), message
    assert "free some space or give --runs-dir a folder on a larger disk" in message
    assert list(tmp_path.iterdir()) == []


def test_a_fold_of_an_experiment_is_not_resumed_on_its_own(runs):
    """`train --resume cv/fold-1 --set data.fold=0` trained fold 1's model on its own held-out cases, and
    `--epochs 3` trained it past the checkpoint its out-of-fold predictions and the decision came from."""
    from liverctl.train.start import train_run

    fold = runs / "cv" / "fold-1"
    (fold / "checkpoints").mkdir(parents=True)
    (fold / "checkpoints" / "last.pt").write_bytes(b"")
    (fold / "config.toml").write_text('preset = "demo"\n')
    for spec in ("cv/fold-1", str(fold)):
        with pytest.raises(LiverctlError) as info:
            train_run(TrainRequest(resume=spec, runs_dir=runs, sets=("data.fold=0",)))
        assert str(info.value) == (f"--resume {spec}: that run is fold-1 of the experiment cv; continue the "
                                   f"experiment with `liverctl train --resume {runs / 'cv'}`")
    assert sorted(p.name for p in fold.iterdir() if p.name != ".lock") == ["checkpoints", "config.toml"]


def test_an_experiment_in_a_runs_folder_linked_to_nowhere_is_one_line(tiny_store, tmp_path):
    """`train --folds all --runs-dir runs` where runs -> a disk not mounted ended in a traceback (FileExistsError:
    the link in the way of the experiment folder made). Now one line names the link, and nothing is made."""
    from liverctl.config import resolve_config
    from liverctl.experiment.train import start_experiment

    (tmp_path / "runs").symlink_to(tmp_path / "big" / "runs")
    cfg = resolve_config("demo", ["data.input_size=64"], {"data.store": str(tiny_store)})
    with pytest.raises(LiverctlError, match=r"runs: is a link to .*big/runs', which does not exist \(a disk or volume "
                                            r"not mounted\?\); mount it, or choose another --runs-dir"):
        start_experiment(cfg, tmp_path / "runs", "cv", "all")
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]

"""Experiments (liverctl/experiment): --folds, out-of-fold pooling, decisions, consistency checks;
a 3-fold demo experiment end to end (slow)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from liverctl.errors import LiverctlError
from liverctl.experiment import decide, folder, oof, tables
from liverctl.experiment.train import cv_figures, evaluate_experiment
from liverctl.metrics import dice_figures


class FakeStore:
    """What the experiment code reads from a store: folds, attrs, labels, meta."""

    def __init__(self, folds: dict[str, int], n_folds: int, labels: dict[str, np.ndarray] | None = None):
        self._folds, self.attrs, self.path = folds, {"n_folds": n_folds}, Path("fake.zarr")
        self._labels = labels or {}

    def folds(self):
        return dict(self._folds)

    def read_label_volume(self, case_id):
        return self._labels[case_id]

    def meta(self, case_id):
        return {"liver_voxels": int(self._labels[case_id].sum())}


def liver(shape=(16, 16, 6), box=(3, 13, 3, 13, 1, 5)) -> np.ndarray:
    label = np.zeros(shape, dtype=np.uint8)
    x0, x1, y0, y1, z0, z1 = box
    label[x0:x1, y0:y1, z0:z1] = 1
    return label


# ------------------------------------------------------------------------------------------ --folds


def test_parse_folds_all_list_and_bad_input():
    store = FakeStore({"a": 0, "b": 1, "c": 2, "d": 2, "x": -2}, n_folds=3)
    assert folder.parse_folds("all", store) == [0, 1, 2]
    assert folder.parse_folds("2, 0", store) == [0, 2]
    # `--folds 0,0` trained fold 0 once, an experiment of one fold, without a word
    with pytest.raises(LiverctlError, match=r"^--folds '2, 0,2': fold 2 is given twice; give each fold once$"):
        folder.parse_folds("2, 0,2", store)
    with pytest.raises(LiverctlError, match=r"^--folds '0,0': fold 0 is given twice"):
        folder.parse_folds("0,0", store)
    with pytest.raises(LiverctlError, match=r"fold 7 is not in this 3-fold store \(folds 0-2\)"):
        folder.parse_folds("7", store)
    with pytest.raises(LiverctlError, match="'all' or fold numbers"):
        folder.parse_folds("zero", store)
    sparse = FakeStore({"a": 0, "b": 2, "x": -2}, n_folds=3)
    with pytest.raises(LiverctlError, match=r"fold 1 has no cases in this store \(folds with cases: 0, 2\)"):
        folder.parse_folds("1", sparse)
    assert folder.parse_folds("0,2", sparse) == [0, 2]
    # `all` was refused ("fold 1 has no cases in this store"): a store of fewer patients than folds could not be
    # cross-validated at all; the fold without a case is left out (it can neither validate nor hold out)
    assert folder.parse_folds("all", sparse) == [0, 2] and folder.empty_folds(sparse) == [1]
    assert folder.fold_assignment(store) == {"a": 0, "b": 1, "c": 2, "d": 2}  # train-only left out


# ------------------------------------------------------------------------------------------ pooling


def test_quantising_a_case_takes_one_temporary_of_its_size_and_the_same_bytes():
    """Out-of-fold prediction quantises each held-out case's float32 probabilities: clip, scale and round each made
    a copy, two of them alive at once (a 512 x 512 x 900 case: 1.9 GB over its 0.94 GB). Now one, and the same
    uint8 values."""
    from memory_peak import traced_peak

    probs = np.random.default_rng(0).random((64, 64, 40), dtype=np.float32) * 1.2 - 0.1  # outside [0, 1] too
    q, peak = traced_peak(lambda: oof.quantize(probs))
    np.testing.assert_array_equal(q, np.rint(np.clip(probs, 0.0, 1.0) * oof.QUANT).astype(np.uint8))
    assert peak < 1.5 * probs.nbytes  # before: 2x and the result


def test_quantised_threshold_matches_the_float_threshold():
    probs = np.linspace(0, 1, 1001).reshape(7, 11, 13)
    q = oof.quantize(probs)
    assert q.dtype == np.uint8 and q.min() == 0 and q.max() == 255
    for t in (0.3, 0.5, 0.7):
        exact = probs >= t
        approx = oof.threshold_mask(q, t)
        assert np.count_nonzero(exact != approx) <= np.count_nonzero(np.abs(probs - t) < 1 / 255)


def test_oof_pooling_covers_fold_cases_only_and_matches_direct_dice(tmp_path):
    rng = np.random.default_rng(0)
    labels = {c: liver(box=(2 + i, 12, 3, 13 - i, 1, 5)) for i, c in enumerate(["a", "b", "c", "d"])}
    labels["extra"] = liver()
    store = FakeStore({"a": 0, "b": 0, "c": 1, "d": 1, "extra": -2}, n_folds=2, labels=labels)
    probs = {c: np.clip(labels[c] * 0.8 + rng.random(labels[c].shape) * 0.4 - 0.1, 0, 1) for c in "abcd"}
    for c in "abcd":
        oof.write_oof_case(tmp_path, c, probs[c], store.folds()[c])
    # an array without `complete` (a crash between voxels and attrs) does not count
    import zarr

    zarr.open_group(str(tmp_path / folder.OOF_STORE), mode="a").create_array("torn", shape=(2, 2, 2), dtype="uint8")
    assert oof.oof_cases(tmp_path) == {"a": 0, "b": 0, "c": 1, "d": 1}

    summary = {"folds": [0, 1], "config": {"infer": {"threshold": 0.5}},
               "fold_results": {"0": {"best": {"volume_dice": 0.8}}, "1": {"best": {"volume_dice": 0.6}}}}
    out = evaluate_experiment(tmp_path, summary, store)
    direct = dice_figures({c: oof.threshold_mask(oof.quantize(probs[c]), 0.5) for c in "abcd"},
                          {c: labels[c] > 0 for c in "abcd"})
    for key in ("volume_dice", "slice_dice", "global_dice"):
        assert out["oof"][key] == pytest.approx(direct[key])
    assert out["oof"]["cases"] == 4 and out["oof"]["train_only_cases"] == 1
    assert "train-only" in out["oof"]["note"]
    del store._folds["extra"]
    no_extra = evaluate_experiment(tmp_path, summary, store)
    assert no_extra["oof"]["train_only_cases"] == 0 and no_extra["oof"]["note"] is None
    assert "train-only" not in tables.headline({**summary, "name": "e", "status": "completed", **no_extra})
    assert out["cv"]["mean"] == pytest.approx(0.7) and out["cv"]["std"] == pytest.approx(0.1)
    d = out["decision"]
    assert len(d["options"]) == len(decide.THRESHOLDS) * len(decide.post_candidates(100))
    assert d["volume_dice"] == max(o["volume_dice"] for o in d["options"])
    assert d["caution"].startswith("thin decision: made on only 4 out-of-fold cases (2 per fold); ")


def test_cv_figures_skip_folds_without_a_best():
    summary = {"folds": [0, 1, 2], "fold_results": {"0": {"best": {"volume_dice": 0.5}}, "1": {"best": {}}}}
    assert cv_figures(summary) == {"folds": {"0": 0.5}, "mean": 0.5, "std": None}  # one fold: no spread (was 0.0)


# ------------------------------------------------------------------------------------------ decisions


def _case(probs: np.ndarray, label: np.ndarray, name: str):
    return name, oof.quantize(probs), label > 0


def test_decision_finds_a_lower_threshold_and_drops_a_spurious_blob():
    cases = []
    for i in range(3):
        label = liver()
        probs = label * 0.45  # under-confident: only a threshold below 0.45 finds the liver
        probs[14:16, 0:2, 0:2] = 0.9  # a spurious blob far from the liver
        cases.append(_case(probs, label, f"c{i}"))
    thresholds = decide.threshold_candidates(0.5)
    posts = decide.post_candidates(200)
    d = decide.choose_decision(cases, thresholds, posts)
    assert d.threshold < 0.45 and d.volume_dice == pytest.approx(1.0)
    assert d.post in ("largest", "largest+fill", "largest+fill2d") or d.post.startswith("min-size")
    none_at_best = decide.find_option(d.options, d.threshold, "none")
    assert none_at_best["volume_dice"] < d.volume_dice
    assert len(d.options) == len(thresholds) * len(posts) and d.cases == 3


def test_decision_ties_keep_the_config_threshold_and_no_post_processing():
    label = liver()
    cases = [_case(label.astype(float), label, "a"), _case(label.astype(float), label, "b")]
    d = decide.choose_decision(cases, decide.threshold_candidates(0.5), decide.post_candidates(400))
    assert (d.threshold, d.post) == (0.5, "none") and d.volume_dice == 1.0
    with pytest.raises(LiverctlError, match="no out-of-fold predictions"):
        decide.choose_decision([], [0.5], ["none"])


# ------------------------------------------------------------------------------------------ checks


SMALL_NET_ENCODER = "tu-mobilenetv3_small_050"  # train_fixtures.SMALL_NET: checkpoints of 4 MB


def _experiment(tmp_path: Path, status="completed") -> Path:
    from run_fixtures import make_config

    exp = tmp_path / "cv"
    exp.mkdir()
    # where its store is: tests that resume it put a FakeStore in LiverStore.open's place (run_folds looks first)
    (tmp_path / "liver.zarr").mkdir(exist_ok=True)
    cfg = make_config("demo", {"data.store": str(tmp_path / "liver.zarr"), "data.input_size": 64,
                               "model.encoder": SMALL_NET_ENCODER, "model.decoder_channels": [16, 8, 8, 8, 8]})
    folder.write_summary(exp, {"name": "cv", "preset": "demo", "store": cfg["data"]["store"], "folds": [0, 1],
                               "config": cfg, "status": status, "fold_results": {},
                               "decision": {"threshold": 0.4, "post": "largest", "options": []}})
    import tomli_w

    for fold in (0, 1):
        run = folder.fold_dir(exp, fold)
        run.mkdir()
        fold_cfg = json.loads(json.dumps(cfg))
        fold_cfg["data"]["fold"] = fold
        (run / "config.toml").write_text(tomli_w.dumps(fold_cfg), encoding="utf-8")
    return exp


def test_expand_runs_replaces_an_experiment_by_its_folds_and_checks_them(tmp_path):
    import tomli_w

    from liverctl.config import read_config
    from liverctl.experiment.ensemble import expand_runs

    exp = _experiment(tmp_path)
    other = tmp_path / "single"
    expanded = expand_runs([exp, other])
    assert expanded.run_dirs == [exp / "fold-0", exp / "fold-1", other]
    assert expanded.experiments == [exp] and expanded.decisions[0]["post"] == "largest"

    cfg = read_config(exp / "fold-1" / "config.toml")
    cfg["preset"] = "v5"
    (exp / "fold-1" / "config.toml").write_text(tomli_w.dumps(cfg), encoding="utf-8")
    with pytest.raises(LiverctlError, match="fold 1 was trained with preset 'v5', the experiment with 'demo'"):
        expand_runs([exp])
    cfg["preset"], cfg["data"]["store"] = "demo", str(tmp_path / "other.zarr")
    (exp / "fold-1" / "config.toml").write_text(tomli_w.dumps(cfg), encoding="utf-8")
    with pytest.raises(LiverctlError, match="fold 1 was trained on store '.*other.zarr', the experiment on"):
        expand_runs([exp])


def test_a_fold_folder_from_another_experiment_is_refused(tmp_path):
    """A fold-1 copied from an experiment with the same preset and store but other settings (here another
    learning rate, or data.context 2) was ensembled silently under this experiment's decision."""
    import tomli_w

    from liverctl.config import read_config
    from liverctl.experiment.ensemble import expand_runs

    exp = _experiment(tmp_path)
    cfg = read_config(exp / "fold-1" / "config.toml")
    for key, value in (("optim", ("lr", 0.05)), ("data", ("context", 2))):
        changed = json.loads(json.dumps(cfg))
        changed[key][value[0]] = value[1]
        (exp / "fold-1" / "config.toml").write_text(tomli_w.dumps(changed), encoding="utf-8")
        with pytest.raises(LiverctlError) as info:
            expand_runs([exp])
        text = str(info.value)
        assert text.startswith(f"{exp / 'fold-1'}: fold 1 was trained with {key}.{value[0]} = {value[1]!r}, ")
        assert "it is not this experiment's fold" in text and "\n" not in text


def test_a_run_given_twice_is_refused(tmp_path):
    """`--run cv --run cv/fold-0` ensembled fold 0 twice (twice its weight in the mean) and said '4 run(s)'."""
    from liverctl.experiment.ensemble import expand_runs

    exp = _experiment(tmp_path)
    with pytest.raises(LiverctlError) as info:
        expand_runs([exp, exp / "fold-0"])
    assert str(info.value) == (f"--run {exp} and --run {exp / 'fold-0'} both hold the run {exp / 'fold-0'}; "
                               "give each run once")
    with pytest.raises(LiverctlError, match=f"^--run {exp} is given twice; give each run once$"):
        expand_runs([exp, exp])
    other = tmp_path / "single"
    with pytest.raises(LiverctlError, match="is given twice"):
        expand_runs([other, tmp_path / "." / "single"])


def test_submit_notes_say_what_came_from_the_decision(tmp_path):
    """`--threshold 0.3` was reported as 'out-of-fold decision: threshold 0.3'; --checkpoint last and a plain
    run in the ensemble were applied the folds' decision without a word."""
    from liverctl.infer.submit import _experiment_decisions

    exp = _experiment(tmp_path)
    notes = []
    _record_checkpoints(exp)
    assert _experiment_decisions([exp], None, None, notes.append)[:2] == (0.4, "largest")
    assert notes == ["2 fold runs from 1 experiment; out-of-fold decision: threshold 0.4, post largest"]
    notes.clear()
    threshold, post, _ = _experiment_decisions([exp, tmp_path / "single"], 0.3, None, notes.append, "last")
    assert (threshold, post) == (0.3, "largest")
    assert notes == [
        f"ensemble weights: {exp} 0.5 (2 folds, 0.25 each), {tmp_path / 'single'} 0.5",
        "2 fold runs from 1 experiment; out-of-fold decision: threshold 0.4, post largest "
        "(--threshold 0.3 given: used instead)",
        "the decision was made on the folds' best checkpoints; --checkpoint last predicts with others",
        "1 other run joins the ensemble: the decision was made without it",  # was 'without them'
    ]
    notes.clear()
    _experiment_decisions([exp, tmp_path / "single", tmp_path / "second"], None, None, notes.append)
    assert notes[-1] == "2 other runs join the ensemble: the decision was made without them"


def test_an_experiment_is_one_member_of_an_ensemble_its_folds_sharing_its_weight(tmp_path):
    """`--run cv --run single` (cv: 5 folds) averaged 6 models alike: the single run weighed 1/6, not the half a
    user ensembling two models expects, and nothing said so. Each --run is now one member (`--weights` to choose
    its share), an experiment's share split among its folds, and the shares are noted where they differ."""
    from liverctl.experiment.ensemble import expand_runs

    exp, other = _experiment(tmp_path), tmp_path / "single"
    expanded = expand_runs([exp, other])
    assert expanded.shares == [0.25, 0.25, 0.5] and expanded.weights() == [0.25, 0.25, 0.5]
    assert expanded.weights_note() == f"ensemble weights: {exp} 0.5 (2 folds, 0.25 each), {other} 0.5"
    weighted = expand_runs([other, exp], weights=[1, 3])
    assert weighted.weights() == [0.25, 0.375, 0.375]
    assert weighted.weights_note() == f"ensemble weights: {other} 0.25, {exp} 0.75 (2 folds, 0.375 each)"
    # every run the same weight: the plain mean (None), which a single run's prediction is to the bit
    assert expand_runs([exp]).weights() is None and expand_runs([exp]).weights_note() is None
    assert expand_runs([other, tmp_path / "second"], weights=[2, 2]).weights() is None
    # weights given that come out equal are still said: the user asked for them
    assert expand_runs([other, tmp_path / "second"], weights=[2, 2]).weights_note() == (
        f"ensemble weights: {other} 0.5, {tmp_path / 'second'} 0.5")
    with pytest.raises(LiverctlError, match=r"^--weights gives 1 weight for 2 --runs: give one weight per --run"):
        expand_runs([exp, other], weights=[1])
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(LiverctlError, match=r"^--weights .*: each weight must be a number above 0"):
            expand_runs([exp, other], weights=[1.0, bad])


def test_weights_that_come_out_equal_only_up_to_rounding_are_the_plain_mean(tmp_path):
    """`--run cv --run single --weights 0.3,0.1` (cv: 3 folds) weighs every model 1/4, but 0.3 / 0.4 / 3 is
    0.25000000000000006 in floats beside 0.1 / 0.4 = 0.25: the shares read as unequal, so the submission was the
    weighted sum (its own rounding) and said 'weighted', where `--weights 3,1` gave the plain mean to the bit."""
    from liverctl.experiment.ensemble import expand_runs

    exp, other = _experiment(tmp_path), tmp_path / "single"
    summary = folder.read_summary(exp)
    summary["folds"] = [0, 1, 2]
    folder.write_summary(exp, summary)
    shutil.copytree(folder.fold_dir(exp, 1), folder.fold_dir(exp, 2))
    text = (folder.fold_dir(exp, 2) / "config.toml").read_text(encoding="utf-8")
    (folder.fold_dir(exp, 2) / "config.toml").write_text(text.replace("fold = 1", "fold = 2"), encoding="utf-8")
    assert expand_runs([exp, other], weights=[3, 1]).weights() is None
    expanded = expand_runs([exp, other], weights=[0.3, 0.1])
    assert expanded.weights() is None
    assert expanded.weights_note() == f"ensemble weights: {exp} 0.75 (3 folds, 0.25 each), {other} 0.25"


def test_the_weights_note_of_a_one_fold_experiment(tmp_path):
    """`train --folds 0` makes an experiment of one fold: the note said '(1 folds, 0.5 each)'."""
    from liverctl.experiment.ensemble import expand_runs

    exp, other = _experiment(tmp_path), tmp_path / "single"
    summary = folder.read_summary(exp)
    summary["folds"] = [0]
    folder.write_summary(exp, summary)
    assert expand_runs([exp, other]).weights_note() is None  # one model each: the plain mean
    assert expand_runs([exp, other], weights=[2, 1]).weights_note() == (
        f"ensemble weights: {exp} 0.667 (1 fold), {other} 0.333")


def _thin(exp: Path, cases: int, folds: list[int], per_fold: dict, case_folds: dict | None) -> dict:
    summary = folder.read_summary(exp)
    summary["folds"] = folds
    summary["decision"].update(cases=cases, volume_dice=0.9)
    summary["oof"] = {"cases": cases, "cases_per_fold": per_fold}
    if case_folds is None:
        summary.pop("case_folds", None)
    else:
        summary["case_folds"] = case_folds
    folder.write_summary(exp, summary)
    return folder.read_summary(exp)


def test_a_decision_on_few_cases_or_some_folds_says_how_thin_it_is_and_what_to_do(tmp_path, capsys):
    """The decision on 6 out-of-fold cases (1-2 per fold, /tmp/S-w's cv) or on folds 0,2 of 5 was shown in train's
    summary, runs, report and submit's notes as firmly as one on 80: nothing said how few cases it rested on."""
    from typer.testing import CliRunner

    from liverctl.cli import app
    from liverctl.commands.experiment import print_experiment
    from liverctl.infer.submit import _experiment_decisions

    exp = _experiment(tmp_path)
    _record_checkpoints(exp)
    every = {str(i): i % 5 for i in range(80)}  # the competition's 80 volumes in 5 folds
    assert folder.decision_caution(_thin(exp, 80, [0, 1, 2, 3, 4], {str(f): 16 for f in range(5)}, every)) is None
    assert folder.decision_caution(_thin(exp, 80, [0, 1, 2, 3, 4], {}, None)) is None  # an older experiment.json

    partial = folder.decision_caution(_thin(exp, 32, [0, 2], {"0": 16, "2": 16}, every))
    assert partial == ("thin decision: made on only 32 out-of-fold cases (16 per fold), from folds 0, 2 of the "
                       "store's 5 (80 training cases); a new experiment with `--folds all` decides on all 80")

    summary = _thin(exp, 6, [0, 1], {"0": 4, "1": 2}, {"a": 0, "b": 1, "c": 0, "x": -2})
    few = folder.decision_caution(summary)
    assert few.startswith("thin decision: made on only 6 out-of-fold cases (2-4 per fold); with fewer than 20 the "
                          "best option wins largely by chance")
    assert few.endswith("; more training cases make it firmer")
    assert few in tables.headline(summary, exp)  # report EXP, console and HTML
    notes = []
    _experiment_decisions([exp], None, None, notes.append)  # submit --run EXP
    assert notes[-1] == few
    summary["status"] = "completed"
    folder.write_summary(exp, summary)
    assert few in folder.current_fold("cv", tmp_path)[1]  # watch EXP
    notes.clear()
    _experiment_decisions([exp], 0.3, "none", notes.append)  # nothing of the decision is used: nothing to say
    assert few not in notes
    result = CliRunner().invoke(app, ["runs", str(tmp_path)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert few in " ".join(result.output.split())
    capsys.readouterr()
    print_experiment({**summary, "path": str(exp), "cv": {"folds": {"0": 0.9, "1": 0.9}, "mean": 0.9, "std": 0.0},
                      "oof": {"cases": 6, "threshold": 0.5, "volume_dice": 0.9, "slice_dice": 0.9, "global_dice": 0.9,
                              "cases_per_fold": {"0": 4, "1": 2}}})
    assert few in " ".join(capsys.readouterr().out.split())  # train's summary


def test_report_of_an_experiment_prints_its_settings_and_a_grid_not_forty_option_rows(tmp_path, capsys):
    """`report cv` printed a 40-row table (5 thresholds x 8 post-processings, each with three Dice figures) and
    nothing of what the experiment set beyond its preset. It now prints its settings beyond the preset (as `runs`
    shows a run's settings as columns) and the options' volume Dice as a grid, a row per post-processing; every
    figure stays in the report's index.html."""
    from liverctl.commands.runs import _print_experiment_options
    from liverctl.report.html import experiment_html

    exp = _experiment(tmp_path)
    summary = folder.read_summary(exp)
    posts = decide.post_candidates(700)
    summary["decision"].update(threshold=0.4, post="largest", options=[
        {"threshold": t, "post": p, "volume_dice": 0.9 + t / 10 + i / 1000, "slice_dice": 0.5, "global_dice": 0.5}
        for t in decide.threshold_candidates(0.5) for i, p in enumerate(posts)])
    folder.write_summary(exp, summary)
    summary = folder.read_summary(exp)

    assert tables.settings_text(summary) == ("settings beyond preset demo: data.input_size=64, "
                                             "model.encoder=tu-mobilenetv3_small_050, model.decoder_channels=[16, 8, 8, 8, 8]")
    head, rows = tables.option_grid(summary)
    assert head == ["post-processing", *(f"threshold {t}" for t in ("0.3", "0.4", "0.5", "0.6", "0.7"))]
    assert [r[0] for r in rows] == posts
    assert rows[1] == ["largest", "0.9310", "0.9410 *", "0.9510", "0.9610", "0.9710"]  # the chosen cell marked
    assert sum("*" in cell for row in rows for cell in row) == 1

    capsys.readouterr()
    _print_experiment_options(exp)
    out = capsys.readouterr().out
    assert "settings beyond preset demo: data.input_size=64" in out
    assert len(out.splitlines()) < 20 and "0.9410 *" in out and "slice Dice" not in out
    html = experiment_html(exp)  # the report keeps every option with all its figures
    assert html.count("<tr>") >= 40 + 1 and "settings beyond preset demo: data.input_size=64" in html

    summary["preset"] = "gone"
    assert tables.settings_text(summary) == "settings: preset gone is none of today's presets; its config is in experiment.json"


def test_report_of_a_run_says_its_settings_beyond_its_preset_as_of_an_experiment(tmp_path):
    """report EXP says what the experiment set beyond its preset; report RUN said nothing of the run's settings."""
    from run_fixtures import make_run
    from typer.testing import CliRunner

    from liverctl.cli import app

    make_run(tmp_path / "runs", "r1", settings={"data.input_size": 64}, planned=3)  # demo trains 6 epochs
    result = CliRunner().invoke(app, ["report", "r1", "--runs-dir", str(tmp_path / "runs"), "--no-overlays"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "run r1: settings beyond preset demo: data.input_size=64, train.epochs=3"
    assert lines[1].startswith("report: ")


def _record_checkpoints(exp: Path, record: bool = True) -> dict:
    """Fold runs with best and last checkpoints (an untrained model of the fold's config), recorded in
    experiment.json as a finished fold records them (`record=False`: as before liverctl recorded them)."""
    from run_fixtures import add_model_checkpoint

    summary = folder.read_summary(exp)
    for fold in summary["folds"]:
        run = folder.fold_dir(exp, fold)
        cfg = {**summary["config"], "data": {**summary["config"]["data"], "fold": fold}}
        for which in ("best", "last"):
            add_model_checkpoint(run, cfg, which)
        summary["fold_results"][str(fold)] = {"status": "completed"}
        if record:
            summary["fold_results"][str(fold)]["checkpoints"] = folder.checkpoint_hashes(run)
    folder.write_summary(exp, summary)
    return summary


def test_a_checkpoint_copied_from_another_fold_is_refused(tmp_path):
    """fold-1's best.pt copied over fold-0's (same experiment, same config: config.toml passes) was ensembled as
    fold 0's, under a decision made on fold 0's own predictions. The sha256 checked is that of the bytes loaded."""
    import shutil

    from liverctl.experiment.ensemble import expand_runs

    exp = _experiment(tmp_path)
    _record_checkpoints(exp)
    assert expand_runs([exp]).notes == []
    assert [r.cfg["data"]["fold"] for r in expand_runs([exp]).load_models()] == [0, 1]
    best0 = exp / "fold-0" / "checkpoints" / "best.pt"
    shutil.copyfile(exp / "fold-1" / "checkpoints" / "best.pt", best0)
    with pytest.raises(LiverctlError) as info:
        expand_runs([exp]).load_models()
    assert str(info.value) == (f"{best0}: not the checkpoint fold 0 produced: its sha256 differs from the one "
                               "experiment.json recorded when the fold finished (copied from another fold or run, or "
                               "changed since); train the experiment again")
    assert len(expand_runs([exp], "last").load_models("last")) == 2  # last.pt is still fold 0's
    best0.unlink()
    with pytest.raises(LiverctlError, match="fold 0 of the experiment has no best checkpoint"):
        expand_runs([exp])


def test_an_experiment_without_checkpoint_records_is_checked_by_the_loaded_config(tmp_path):
    """An experiment.json from before the records: expand_runs says the checkpoints are unchecked, and the config
    inside each loaded checkpoint must still be its fold's (another fold's best.pt holds out another fold)."""
    import shutil

    from liverctl.experiment.ensemble import expand_runs

    exp = _experiment(tmp_path)
    _record_checkpoints(exp, record=False)
    expanded = expand_runs([exp])
    assert expanded.notes == [f"{exp / folder.SUMMARY_FILE} records no sha256 of the best checkpoint of folds 0, 1 "
                              "(written before liverctl recorded them): those are checked by their config only"]
    assert len(expanded.load_models()) == 2
    best0 = exp / "fold-0" / "checkpoints" / "best.pt"
    shutil.copyfile(exp / "fold-1" / "checkpoints" / "best.pt", best0)
    with pytest.raises(LiverctlError, match=f"^{best0}: best.pt holds out fold 1, not fold 0$"):
        expanded.load_models()


def test_submit_postprocess_auto_on_an_experiment_is_its_out_of_fold_decision(tmp_path):
    """auto scored the clean-ups on fold 0's validation cases, which every other fold trained on; the
    experiment already chose on cases no fold trained on."""
    from liverctl.infer.submit import _experiment_decisions

    notes = []
    exp = _experiment(tmp_path)
    _record_checkpoints(exp)
    threshold, post, _ = _experiment_decisions([exp], None, "auto", notes.append)
    assert (threshold, post) == (0.4, "largest")
    assert notes[0].startswith("--postprocess auto: an experiment's out-of-fold decision is that choice")
    assert notes[1] == "2 fold runs from 1 experiment; out-of-fold decision: threshold 0.4, post largest"


def test_unfinished_or_damaged_experiment_is_one_line(tmp_path):
    from liverctl.experiment.ensemble import expand_runs

    exp = _experiment(tmp_path, status="time_limit")
    with pytest.raises(LiverctlError, match=r"experiment is not finished \(status time_limit\)"):
        expand_runs([exp])
    (exp / folder.SUMMARY_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(LiverctlError, match="cannot read the experiment summary"):
        folder.read_summary(exp)


@pytest.mark.parametrize(
    ("decision", "message"),
    [
        ({"threshold": "abc", "post": "none"}, "out-of-fold decision threshold 'abc': a probability threshold"),
        ({"post": "none"}, "out-of-fold decision threshold None: a probability threshold"),
        ({"threshold": [0.5], "post": "none"}, "out-of-fold decision threshold [0.5]: a probability threshold"),
        ({"threshold": 5, "post": "none"}, "out-of-fold decision threshold 5: a probability threshold"),
        ({"threshold": 0.5, "post": 7}, "out-of-fold decision post 7 is not a post-processing spec"),
        ({"threshold": 0.5, "post": "explode"}, "unknown post-processing 'explode'"),
        # a valid spec, but none the decision makes: every mask came out empty, or the decision was not tried
        ({"threshold": 0.5, "post": "min-size:99999999999999999999999"}, "positive voxel count below 2^63"),
        ({"threshold": 0.5, "post": "largest+min-size:10000000000"}, "fewer than 10000000000 voxels, more than a "
         "tenth of any liver has (the decision tries min-size:N up to 100,000,000)"),
        ({"threshold": 0.5, "post": "fill+largest"}, "post 'fill+largest' is none of the post-processing the decision "
         "tries: none, largest, min-size:N, fill, fill2d, largest+fill, min-size:N+fill, largest+fill2d"),
        ({"threshold": 0.5, "post": "auto"}, "post 'auto' is none of the post-processing"),
        ({"threshold": 0.999, "post": "none"}, "threshold 0.999 is none of the thresholds the decision tries: the "
         "config's 0.5, then 0.3, 0.4, 0.6, 0.7"),
    ],
)
def test_a_damaged_decision_is_one_line_naming_experiment_json(tmp_path, decision, message):
    """submit applies an experiment's decision: a threshold of text, a list or none at all ended in a
    traceback (ValueError, TypeError, KeyError), and a threshold of 5 or min-size:99999999999999999999999 wrote a
    CSV of empty masks ("32 empty"). Now a decision is one `decide.py` can make (its candidates), or one line."""
    from liverctl.experiment.ensemble import expand_runs

    exp = _experiment(tmp_path)
    summary = folder.read_summary(exp)
    summary["decision"] = decision
    folder.write_summary(exp, summary)
    with pytest.raises(LiverctlError) as info:
        expand_runs([exp])
    text = str(info.value)
    assert text.startswith(f"{exp / folder.SUMMARY_FILE}: ") and message in text and "\n" not in text


def test_an_experiment_config_without_a_data_section_is_one_line(tmp_path):
    from liverctl.experiment.ensemble import expand_runs

    exp = _experiment(tmp_path)
    summary = folder.read_summary(exp)
    for damaged in ({k: v for k, v in summary["config"].items() if k != "data"}, {**summary["config"], "data": "x"}):
        folder.write_summary(exp, {**summary, "config": damaged})
        with pytest.raises(LiverctlError, match="experiment summary has no config"):
            expand_runs([exp])


def test_watch_follows_the_running_fold_and_lists_finished_ones(tmp_path):
    exp = _experiment(tmp_path, status="running")
    summary = folder.read_summary(exp)
    summary["fold_results"] = {"0": {"status": "completed", "oof_done": True, "best": {"volume_dice": 0.91}},
                               "1": {"status": "running"}}
    folder.write_summary(exp, summary)
    from liverctl.runs.folder import RunLock

    with RunLock(exp):  # the experiment's process holds its folder's lock while it trains
        run, line = folder.current_fold("cv", tmp_path)
    assert run == exp / "fold-1" and "following fold 1" in line and "fold 0 0.9100" in line
    assert folder.current_fold("fold-0", exp) is None  # a plain run is not an experiment


def test_watch_says_an_experiment_is_completed_or_stopped_not_followed(tmp_path):
    """`watch EXP --once` said 'experiment cv: following fold 1' of a completed experiment and of one stopped
    by Ctrl-C alike, with neither its result nor how to continue it."""
    exp = _experiment(tmp_path)
    summary = folder.read_summary(exp)
    summary["fold_results"] = {"0": {"status": "completed", "oof_done": True, "best": {"volume_dice": 0.91}},
                               "1": {"status": "completed", "oof_done": True, "best": {"volume_dice": 0.93}}}
    summary["cv"] = {"folds": {"0": 0.91, "1": 0.93}, "mean": 0.92, "std": 0.01}
    summary["decision"] = {"threshold": 0.4, "post": "largest", "volume_dice": 0.935, "options": []}
    folder.write_summary(exp, summary)
    run, line = folder.current_fold("cv", tmp_path)
    assert run == exp / "fold-1" and "following" not in line
    assert line == ("experiment cv completed: finished folds' best volume Dice: fold 0 0.9100, fold 1 0.9300; "
                    "0.9200 +- 0.0100; out-of-fold decision: threshold 0.4, post largest (volume Dice 0.9350); "
                    "fold 1 shown")

    summary["status"], summary["message"] = "interrupted", "fold 1 stopped: interrupted"
    summary["fold_results"]["1"] = {"status": "interrupted"}
    folder.write_summary(exp, summary)
    run, line = folder.current_fold("cv", tmp_path)
    assert run == exp / "fold-1" and "following" not in line
    assert line.startswith("experiment cv interrupted (fold 1 stopped: interrupted): finished folds' best volume "
                           "Dice: fold 0 0.9100; fold 1 shown")
    assert line.endswith(f"continue it with `liverctl train --resume {exp}`")

    summary["status"], summary["message"] = "running", ""  # killed: experiment.json still says running
    folder.write_summary(exp, summary)
    _, line = folder.current_fold("cv", tmp_path)
    assert line.startswith("experiment cv interrupted: ") and "following" not in line and "--resume" in line


def test_a_killed_experiment_reads_interrupted_with_how_to_continue_it_everywhere(tmp_path):
    """After `kill -9` of `train --folds all` (mid fold 1, by hand in /tmp/S-k), experiment.json still said
    running: `report cvk` printed 'experiment cvk (demo, 5 folds, running)' and `submit --run cvk` 'experiment
    is not finished (status running)', as if it were being trained; `runs` said only 'resume it'. Here a real
    process holds the experiment's lock as train does, and is killed with SIGKILL."""
    import signal
    import subprocess
    import sys
    import time

    from liverctl.experiment.ensemble import expand_runs
    from liverctl.experiment.summary import summarize_experiment
    from liverctl.runs.folder import writer_alive

    exp = _experiment(tmp_path, status="running")
    code = ("import time; from liverctl.runs.folder import RunLock\n"
            f"lock = RunLock({str(exp)!r}).acquire(); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        summary = folder.read_summary(exp)
        assert folder.status_now(exp, summary) == "running"
        assert "(demo, 2 folds, running)" in tables.headline(summary, exp)
        with pytest.raises(LiverctlError, match=r"experiment is still being trained; submit it once it completes"):
            expand_runs([exp])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while writer_alive(exp) and time.monotonic() < deadline:
        time.sleep(0.05)

    resume = f"continue it with `liverctl train --resume {exp}`"
    summary = folder.read_summary(exp)
    assert summary["status"] == "running" and folder.status_now(exp, summary) == "interrupted"
    line = tables.headline(summary, exp)
    assert line.startswith("experiment cv (demo, 2 folds, interrupted); experiment.json says running but nothing "
                           "is writing it (killed?); ") and resume in line
    with pytest.raises(LiverctlError, match=r"experiment is not finished: experiment.json says running but nothing "
                       r"is writing it \(killed\?\); continue it with `liverctl train --resume "):
        expand_runs([exp])
    row = summarize_experiment(exp)
    assert row.status == "interrupted" and row.ended_because is None
    assert row.problems == [f"experiment.json says running but nothing is writing it (killed?); {resume}"]
    _, line = folder.current_fold("cv", tmp_path)
    assert line.startswith("experiment cv interrupted: ") and line.endswith(resume)


# ------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def three_fold_store(tiny_dataset, tmp_path_factory) -> Path:
    from liverctl.data.ingest import ingest_folder

    store = tmp_path_factory.mktemp("cv-store") / "liver.zarr"
    assert ingest_folder(tiny_dataset, store=store, n_folds=3, workers=1).ok
    return store


TINY_TRAIN = ["--set", "data.input_size=64", "--set", "train.steps_per_epoch=1", "--set", "train.batch_size=2",
              "--set", "data.num_workers=0", "--epochs", "1", "--device", "cpu", "-q"]


def test_bad_folds_are_one_line_and_leave_nothing(three_fold_store, tmp_path):
    from typer.testing import CliRunner

    from liverctl.cli import app

    runner = CliRunner()
    args = ["train", "--preset", "demo", "--store", str(three_fold_store), "--runs-dir", str(tmp_path), "--name", "cv"]
    result = runner.invoke(app, [*args, "--folds", "7", *TINY_TRAIN])
    assert result.exit_code != 0 and "fold 7 is not in this 3-fold store (folds 0-2)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "cv").exists()


def test_all_folds_of_a_store_with_empty_ones_are_those_with_cases_and_every_case_is_held_out(
        tiny_dataset, tmp_path, monkeypatch):
    from liverctl.config import resolve_config
    from liverctl.data.ingest import ingest_folder
    from liverctl.data.store import LiverStore
    from liverctl.experiment import train

    store_path = tmp_path / "liver.zarr"
    assert ingest_folder(tiny_dataset, store=store_path, n_folds=8, workers=1).ok  # 6 patients, 8 folds
    monkeypatch.setattr(train, "run_folds", lambda exp_dir, options: folder.read_summary(exp_dir))
    said = []
    cfg = resolve_config("demo", ["data.input_size=64", "train.batch_size=2"], {"data.store": str(store_path)})
    summary = train.start_experiment(cfg, tmp_path / "runs", "cv", "all", train.FoldOptions(say=said.append))
    store = LiverStore.open(store_path)
    empty = folder.empty_folds(store)
    assert len(empty) == 2 and summary["empty_folds"] == empty
    assert summary["folds"] == [f for f in range(8) if f not in empty]
    assert said == [f"note: 2 of the store's 8 folds ({empty[0]}, {empty[1]}) hold no case: skipped; the 6 folds "
                    "trained still hold each of the 6 cases out once"]
    # the out-of-fold pool (and so the decision) is every case in a fold, each from the fold trained without it
    assert train.experiment_cases(summary, store) == folder.fold_assignment(store) and len(set(summary["folds"])) == 6


def test_resuming_an_experiment_from_another_folder_says_where_its_store_is(tiny_store, tmp_path, monkeypatch):
    """`train --resume EXPERIMENT` from another folder than the one it was trained in said "store/liver.zarr: no
    store here; create one with `liverctl ingest DATA --store PATH`" of a store that is there (6ab4110 said it
    right of a run). An experiment's store cannot change on resume, so the line says to resume from the folder it
    was trained in, which experiment.json now records."""
    from liverctl.config import resolve_config
    from liverctl.experiment import train
    from liverctl.train.start import TrainRequest

    home = tmp_path / "home"
    (home / "store").mkdir(parents=True)
    (home / "store" / "liver.zarr").symlink_to(tiny_store)  # where the default, relative data.store leads
    monkeypatch.chdir(home)
    with monkeypatch.context() as m:
        m.setattr(train, "run_folds", lambda exp_dir, options: folder.read_summary(exp_dir))
        cfg = resolve_config("demo", ["data.input_size=64", "train.batch_size=2"])
        summary = train.start_experiment(cfg, home / "runs", "cv", "all")
    assert summary["config"]["data"]["store"] == "store/liver.zarr" and summary["trained_in"] == str(home)
    exp = home / "runs" / "cv"
    monkeypatch.chdir(tmp_path)
    line = ("store/liver.zarr: no store here (the data.store of experiment cv, relative to the folder the experiment "
            "was trained in{}); an experiment's store cannot change on resume: resume it from that folder")
    with pytest.raises(LiverctlError) as info:
        train.train_experiment(TrainRequest(resume=str(exp)))
    assert str(info.value) == line.format(f": '{home}'")
    del summary["trained_in"]  # an experiment.json written before the record
    folder.write_summary(exp, summary)
    with pytest.raises(LiverctlError) as info:
        train.train_experiment(TrainRequest(resume=str(exp)))
    assert str(info.value) == line.format("")
    summary["config"]["data"]["store"] = str(tmp_path / "gone.zarr")  # an absolute store moved away
    folder.write_summary(exp, summary)
    with pytest.raises(LiverctlError) as info:
        train.train_experiment(TrainRequest(resume=str(exp)))
    assert str(info.value) == (f"{tmp_path / 'gone.zarr'}: no store here (the data.store of experiment cv); an "
                               "experiment's store cannot change on resume: put the store back there, or start a new "
                               "experiment")


def test_off_a_terminal_validation_and_out_of_fold_prediction_write_their_lines(three_fold_store, tmp_path,
                                                                                 monkeypatch):
    """`!liverctl train --folds all` in a notebook's cell: a fold's validation and its out-of-fold prediction (each
    minutes for a large preset) wrote nothing, where the steps' line was written every `pipe_progress.EVERY_SECONDS`
    (0 here: at every batch). Both now write theirs: the epoch line saying how far the validation is, a bar of the
    fold's held-out slices. Off a terminal only (CliRunner's stderr is none); a terminal shows what it did."""
    from typer.testing import CliRunner

    import liverctl.pipe_progress
    from liverctl.cli import app
    from liverctl.data.store import LiverStore

    monkeypatch.setattr(liverctl.pipe_progress, "EVERY_SECONDS", 0.0)
    args = ["train", "--preset", "demo", "--store", str(three_fold_store), "--runs-dir", str(tmp_path), "--name", "cv",
            "--folds", "0", *(a for a in TINY_TRAIN if a != "-q")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert any(line.startswith("epoch 1/1") and " validating 1/" in line for line in lines), result.stderr
    store = LiverStore.open(three_fold_store)
    slices = sum(store.meta(case)["shape"][2] for case, fold in store.folds().items() if fold == 0)
    held_out = [line for line in lines if line.startswith("fold 0 out-of-fold")]
    assert held_out and f" {slices}/{slices} slices " in held_out[-1], result.stderr


@pytest.mark.slow
def test_three_fold_experiment_end_to_end(three_fold_store, tiny_dataset, tmp_path, monkeypatch):
    """train --folds all (cut after fold 0, then --resume), runs --json, report, submit, evaluate."""
    from typer.testing import CliRunner

    from liverctl.cli import app
    from liverctl.data.store import LiverStore
    from liverctl.train import loop

    runner = CliRunner()
    runs_dir = tmp_path / "runs"
    real = loop.run_training

    def cut_at_fold_1(cfg, run_dir, **kwargs):
        if cfg["data"]["fold"] == 1:
            raise KeyboardInterrupt
        return real(cfg, run_dir, **kwargs)

    monkeypatch.setattr(loop, "run_training", cut_at_fold_1)
    args = ["train", "--preset", "demo", "--store", str(three_fold_store), "--runs-dir", str(runs_dir), "--name", "cv"]
    runner.invoke(app, [*args, "--folds", "all", *TINY_TRAIN])
    summary = folder.read_summary(runs_dir / "cv")
    assert summary["status"] == "interrupted" and summary["fold_results"]["0"]["oof_done"]
    monkeypatch.setattr(loop, "run_training", real)

    result = runner.invoke(app, ["train", "--resume", "cv", "--runs-dir", str(runs_dir), "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert "completed experiment cv" in result.stdout
    summary = folder.read_summary(runs_dir / "cv")
    assert summary["status"] == "completed"
    starts = (runs_dir / "cv" / "fold-0" / "events.jsonl").read_text().count('"run_start"')
    assert starts == 1  # the finished fold was not trained again
    assert oof.oof_cases(runs_dir / "cv") == folder.fold_assignment(LiverStore.open(three_fold_store))
    assert len(summary["decision"]["options"]) >= 8
    for fold in (0, 1, 2):  # what each fold produced, recorded when it finished (submit below checks them)
        recorded = summary["fold_results"][str(fold)]["checkpoints"]
        assert recorded == folder.checkpoint_hashes(runs_dir / "cv" / f"fold-{fold}") and set(recorded) == {"best", "last"}

    rows = json.loads(runner.invoke(app, ["runs", str(runs_dir), "--json"]).stdout)
    assert len(rows) == 1 and rows[0]["kind"] == "experiment"
    assert [f["name"] for f in rows[0]["folds"]] == ["fold-0", "fold-1", "fold-2"]
    assert rows[0]["oof"]["cases"] == 6 and rows[0]["cv_mean"] is not None

    result = runner.invoke(app, ["report", "cv", "--runs-dir", str(runs_dir), "--no-overlays"])
    assert result.exit_code == 0, result.output
    assert "out-of-fold options" in result.stdout
    assert "Out-of-fold options" in (runs_dir / "cv" / "report" / "index.html").read_text()

    out = tmp_path / "cv.csv"
    result = runner.invoke(app, ["submit", "--run", str(runs_dir / "cv"), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    record = json.loads((runs_dir / "cv" / "submissions.jsonl").read_text().splitlines()[-1])
    assert [Path(p).parent.parent.name for p in record["checkpoints"]] == ["fold-0", "fold-1", "fold-2"]
    assert record["threshold"] == summary["decision"]["threshold"] and record["post"] == summary["decision"]["post"]
    result = runner.invoke(app, ["evaluate", str(out), "--labels", str(tiny_dataset / "test_labels")])
    assert result.exit_code == 0, result.output
    assert json.loads(out.with_suffix(".scores.json").read_text())["volume_dice"] is not None


def test_runs_shows_an_odd_decision_as_written_without_a_traceback(tmp_path):
    """experiment.json is anyone's file: a decision with text for numbers, or markup in its post-processing,
    is shown as it is (it once ended `liverctl runs` in a TypeError or rich's MarkupError)."""
    from typer.testing import CliRunner

    from liverctl.cli import app

    exp = _experiment(tmp_path)
    summary = folder.read_summary(exp)
    summary["decision"] = {"threshold": "x", "post": "largest[/p]", "cases": "[b]3", "options": []}
    folder.write_summary(exp, summary)
    result = CliRunner().invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "cv: decided on [b]3 out-of-fold cases: threshold -, post largest[/p] (volume Dice -)" in " ".join(
        result.stdout.split())


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda s: s.update(folds=[True, 1]), "experiment summary has no usable list of folds"),
        (lambda s: s.update(fold_results=[1]), "experiment summary's fold_results is list, not a table"),
        (lambda s: s.update(fold_results={"0": 5}), "experiment summary's fold_results['0'] is int, not a table"),
        (lambda s: s.update(fold_results={"0": {"best": "x"}}), "fold_results['0'].best is str, not a table"),
        (lambda s: s.update(cv=[1]), "experiment summary's cv is list, not a table"),
        (lambda s: s.update(decision="largest"), "experiment summary's decision is str, not a table"),
        (lambda s: s["config"].update(train=1.5), "experiment summary's config.train is float, not a table"),
    ],
)
def test_a_damaged_experiment_summary_is_one_line(tmp_path, damage, message):
    """report, watch and train --resume indexed these parts and ended in AttributeError tracebacks."""
    exp = _experiment(tmp_path)
    summary = folder.read_summary(exp)
    damage(summary)
    folder.write_summary(exp, summary)
    with pytest.raises(LiverctlError) as info:
        folder.read_summary(exp)
    assert str(info.value).startswith(f"{exp / folder.SUMMARY_FILE}: ") and message in str(info.value)


def test_an_experiment_summary_nested_absurdly_deep_is_one_line(tmp_path):
    """experiment.json is anyone's file: a list nested 100000 deep ended report, runs and submit in a
    RecursionError traceback from the JSON decoder."""
    exp = _experiment(tmp_path)
    path = exp / folder.SUMMARY_FILE
    text = path.read_text(encoding="utf-8")
    path.write_text(text[:text.rindex("}")] + ', "x": ' + "[" * 100000 + "]" * 100000 + "}", encoding="utf-8")
    with pytest.raises(LiverctlError, match=f"^{path}: cannot read the experiment summary "):
        folder.read_summary(exp)


def test_an_experiment_summary_holding_an_integer_of_thousands_of_digits_is_one_line(tmp_path):
    """Python's JSON decoder refuses an integer of more than 4300 digits with a plain ValueError, which read_summary
    did not catch: summarize_experiment (report, train --resume) ended in its traceback (scripts/fuzz_readers.py
    json)."""
    from liverctl.experiment.summary import summarize_experiment

    exp = _experiment(tmp_path)
    path = exp / folder.SUMMARY_FILE
    text = path.read_text(encoding="utf-8")
    path.write_text(text[:text.rindex("}")] + ', "x": ' + "9" * 5000 + "}", encoding="utf-8")
    with pytest.raises(LiverctlError, match=f"^{path}: cannot read the experiment summary \\(ValueError: Exceeds"
                       ) as info:
        folder.read_summary(exp)
    assert str(info.value).endswith("…)")  # Python's long message, cut with a mark (was cut by hand, unmarked)
    summarize_experiment(exp)  # says what it could not read, as of any damaged summary


def test_a_decisions_post_from_experiment_json_is_printed_as_printable_text(tmp_path):
    """experiment.json is anyone's file: a decision's post holding ESC, a newline and a rich tag reached the
    terminal as it was from `runs` (its decided-on line) and `report` (the headline, printed as markup: '[bold]'
    gone, and the option table's cells)."""
    from typer.testing import CliRunner

    from liverctl.cli import app

    exp = _experiment(tmp_path)
    summary = folder.read_summary(exp)
    post = "largest\x1b[31mRED\nnext [bold]x"
    summary["decision"].update(post=post, options=[{"threshold": 0.4, "post": post, "volume_dice": 0.5}])
    folder.write_summary(exp, summary)
    result = CliRunner().invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "cv: decided on" in result.stdout and "\x1b" not in result.stdout
    assert "post largest [31mRED next [bold]x (volume Dice -)" in result.stdout
    result = CliRunner().invoke(app, ["report", str(exp), "--no-overlays", "--out", str(tmp_path / "rep")])
    assert "\x1b" not in result.stdout, result.output
    assert "decision: threshold 0.4, post largest [31mRED next [bold]x (out-of-fold" in result.stdout
    table = result.stdout.split("out-of-fold options")[1]  # the cell may wrap: its words are there, as written
    assert all(word in table for word in ("largest", "[31mRED", "next", "[bold]x"))


def test_odd_figures_in_experiment_json_are_shown_as_dashes(tmp_path):
    """A cv mean, an out-of-fold threshold or an option's threshold of text ended `runs` and `report` in a
    ValueError / TypeError (format codes applied to a str or None)."""
    from typer.testing import CliRunner

    from liverctl.cli import app

    exp = _experiment(tmp_path)
    summary = folder.read_summary(exp)
    summary.update(cv={"mean": "x", "std": None, "folds": 3}, oof={"volume_dice": 0.5, "threshold": "y"})
    summary["decision"].update(threshold="q", options=[1, {"threshold": "a", "post": "none", "volume_dice": "b"}])
    folder.write_summary(exp, summary)
    line = tables.headline(folder.read_summary(exp))
    assert "threshold -, no post-processing): volume 0.5000" in line and "decision: threshold -, post largest" in line
    assert tables.option_rows(folder.read_summary(exp)) == [("-", "none", "-", "-", "-")]
    summary["cv"] = {"mean": 0.8, "std": "z", "folds": 3}
    folder.write_summary(exp, summary)
    result = CliRunner().invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "0.8000 +- - (-)" in result.stdout


@pytest.mark.parametrize("folds, words", [([0], "1 fold"), ([0, 1], "2 folds")])
def test_the_headline_counts_an_experiments_folds_in_words_that_agree(tmp_path, folds, words):
    """`--folds 0` made an experiment the headline called "(demo, 1 folds, completed)"."""

    summary = folder.read_summary(_experiment(tmp_path))
    summary["folds"] = folds
    assert tables.headline(summary).startswith(f"experiment {summary['name']} ({summary['preset']}, {words}, ")


def test_dice_figures_outside_0_1_in_experiment_json_are_shown_as_dashes(tmp_path):
    """A cv mean of 1e308 filled `runs`' folds column with a 309-digit number, an out-of-fold Dice of -4 was
    the experiment's `vol Dice`, and a decision's Dice of 9 was printed as 9.0000."""
    from typer.testing import CliRunner

    from liverctl.cli import app

    exp = _experiment(tmp_path)
    summary = folder.read_summary(exp)
    summary.update(cv={"mean": 1e308, "std": -3, "folds": {"0": 0.5, "1": 0.6}},
                   oof={"volume_dice": -4, "slice_dice": 0.25})
    summary["decision"].update(volume_dice=9.0, options=[{"threshold": 0.5, "post": "none", "volume_dice": 2.0},
                                                          {"threshold": 0.4, "post": "none", "volume_dice": 0.7}])
    folder.write_summary(exp, summary)
    result = CliRunner().invoke(app, ["runs", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    (row,) = [r for r in json.loads(result.stdout) if r.get("kind") == "experiment"]
    assert row["volume_dice"] is None and row["slice_dice"] == 0.25 and row["decision"]["volume_dice"] is None
    line = tables.headline(folder.read_summary(exp))
    assert "per-fold best volume Dice - +- -" in line and "(out-of-fold volume Dice -)" in line
    assert [r[2] for r in tables.option_rows(folder.read_summary(exp))] == ["0.7000", "-"]


def test_the_pool_is_exactly_the_experiments_cases_each_from_the_fold_that_held_it_out(tmp_path):
    """The decision pooled whatever complete arrays oof.zarr held: with one case's array lost it decided on
    5 of 6 cases without a word; an array predicted by another fold (which trained on the case) counted too."""
    labels = {c: liver() for c in "abcde"}
    store = FakeStore({"a": 0, "b": 0, "c": 1, "d": 1, "e": 2}, n_folds=3, labels=labels)
    summary = {"folds": [0, 1], "config": {"infer": {"threshold": 0.5}}, "fold_results": {}}
    for c in "abc":
        oof.write_oof_case(tmp_path, c, labels[c].astype(float), store.folds()[c])
    oof.write_oof_case(tmp_path, "e", labels["e"].astype(float), 2)  # fold 2 is not in this experiment
    with pytest.raises(LiverctlError, match=r"the out-of-fold prediction of 1 case is missing \(d\); .* predicts it again$"):
        evaluate_experiment(tmp_path, summary, store)
    oof.write_oof_case(tmp_path, "d", labels["d"].astype(float), 0)  # predicted by fold 0, which trained on d
    assert oof.missing_cases(tmp_path, {"c": 1, "d": 1}) == ["d"]
    oof.write_oof_case(tmp_path, "d", labels["d"].astype(float), 1)
    out = evaluate_experiment(tmp_path, summary, store)
    assert out["oof"]["cases"] == 4 and out["decision"]["cases"] == 4  # e (fold 2) left out


@pytest.mark.parametrize("lost, said_first", [
    ("c", "fold 1: the out-of-fold prediction of 1 case is missing (c); predicting it again"),
    ("cd", "fold 1: the out-of-fold predictions of 2 cases are missing (c, d); predicting them again"),
])
def test_resume_predicts_a_finished_folds_lost_cases_again(tmp_path, monkeypatch, lost, said_first):
    from liverctl.data import store as store_module
    from liverctl.experiment import train as experiment_train

    exp = _experiment(tmp_path, status="interrupted").rename(tmp_path / "cv-moved")  # experiment.json says "cv"
    labels = {c: liver() for c in "abcd"}
    store = FakeStore({"a": 0, "b": 0, "c": 1, "d": 1}, n_folds=2, labels=labels)
    summary = folder.read_summary(exp)
    summary.pop("decision")
    summary["fold_results"] = {str(f): {"run": f"fold-{f}", "status": "completed", "oof_done": True,
                                        "best": {"volume_dice": 0.5}} for f in (0, 1)}
    folder.write_summary(exp, summary)
    for c in sorted(set("abcd") - set(lost)):  # c (and d), of fold 1, lost
        oof.write_oof_case(exp, c, labels[c].astype(float), store.folds()[c])
    monkeypatch.setattr(store_module.LiverStore, "open", staticmethod(lambda path: store))
    predicted = []

    def predict(self, fold, entry):
        predicted.append(fold)
        for c, f in store.folds().items():
            if f == fold:
                oof.write_oof_case(self.exp_dir, c, labels[c].astype(float), fold)
        entry["oof_done"] = True

    monkeypatch.setattr(experiment_train._Folds, "train", lambda self, fold, entry: None)
    monkeypatch.setattr(experiment_train._Folds, "predict", predict)
    said = []
    result = experiment_train.run_folds(exp, experiment_train.FoldOptions(say=said.append))
    assert predicted == [1] and result["status"] == "completed" and result["oof"]["cases"] == 4
    assert said[0] == said_first  # number and verb agree
    # what train prints names the folder it worked on, not the name the experiment began under
    assert result["name"] == "cv-moved" == folder.read_summary(exp)["name"] and result["path"] == str(exp)


def _finished_folds_to_predict_again(tmp_path: Path):
    """An interrupted experiment whose two folds finished (checkpoints recorded, out-of-fold done) over a FakeStore
    of cases a, b (fold 0) and c, d (fold 1): (exp, labels, store, summary), summary not yet written back."""
    exp = _experiment(tmp_path, status="interrupted")
    labels = {c: liver() for c in "abcd"}
    store = FakeStore({"a": 0, "b": 0, "c": 1, "d": 1}, n_folds=2, labels=labels)
    summary = _record_checkpoints(exp)
    summary.pop("decision")
    for fold in (0, 1):
        summary["fold_results"][str(fold)].update(oof_done=True, best={"volume_dice": 0.5})
    return exp, labels, store, summary


def test_predicting_a_fold_again_checks_its_recorded_checkpoint(tmp_path, monkeypatch):
    """A finished fold whose held-out predictions are lost is predicted again with its best.pt: one put there since
    (another fold's) is refused; a fold finished before liverctl recorded checkpoints gets its record then."""
    import shutil

    import liverctl.infer.predict
    from liverctl.data import store as store_module
    from liverctl.experiment import train as experiment_train

    exp, labels, store, summary = _finished_folds_to_predict_again(tmp_path)
    del summary["fold_results"]["0"]["checkpoints"]  # fold 0 finished before the records
    folder.write_summary(exp, summary)
    monkeypatch.setattr(store_module.LiverStore, "open", staticmethod(lambda path: store))
    monkeypatch.setattr(experiment_train._Folds, "train", lambda self, fold, entry: None)
    predicted = []

    def predict_cases(runs, store, cases, **kwargs):  # the loaded fold predicts its cases' labels
        predicted.append(runs[0].cfg["data"]["fold"])
        for case in cases:
            yield case, labels[case].astype(float)

    monkeypatch.setattr(liverctl.infer.predict, "predict_cases", predict_cases)
    shutil.copyfile(exp / "fold-0" / "checkpoints" / "best.pt", exp / "fold-1" / "checkpoints" / "best.pt")
    with pytest.raises(LiverctlError, match="fold-1/checkpoints/best.pt: not the checkpoint fold 1 produced"):
        experiment_train.run_folds(exp, experiment_train.FoldOptions(device="cpu"))
    written = folder.read_summary(exp)
    assert predicted == [0] and written["status"] == "failed" and "not the checkpoint fold 1" in written["message"]
    assert written["fold_results"]["0"]["checkpoints"] == folder.checkpoint_hashes(exp / "fold-0")


@pytest.mark.parametrize(("error", "status"), [(KeyboardInterrupt(), "interrupted"),
                                               (LiverctlError("disk gone"), "failed")])
def test_an_error_in_out_of_fold_prediction_ends_the_experiment(tmp_path, monkeypatch, error, status):
    """Ctrl-C while a fold's held-out cases were predicted left experiment.json saying 'running'."""
    from liverctl.data import store as store_module
    from liverctl.experiment import train as experiment_train

    exp = _experiment(tmp_path, status="running")
    summary = folder.read_summary(exp)
    summary.pop("decision")
    folder.write_summary(exp, summary)
    store = FakeStore({"a": 0, "b": 0, "c": 1, "d": 1}, n_folds=2, labels={c: liver() for c in "abcd"})
    monkeypatch.setattr(store_module.LiverStore, "open", staticmethod(lambda path: store))
    monkeypatch.setattr(experiment_train._Folds, "train", lambda self, fold, entry: None)

    def predict(self, fold, entry):
        raise error

    monkeypatch.setattr(experiment_train._Folds, "predict", predict)
    with pytest.raises(type(error)):
        experiment_train.run_folds(exp, experiment_train.FoldOptions())
    written = folder.read_summary(exp)
    assert written["status"] == status and written["message"].startswith("fold 0, out-of-fold prediction")


def test_an_unfinished_experiment_says_how_to_continue_it_by_its_folder(tmp_path, capsys):
    """After `mv runs/cv runs/cv-old`, `train --resume runs/cv-old` said to continue `--resume cv --runs-dir
    runs` (another experiment, or none) and that the options were in runs/cv/experiment.json."""
    from liverctl.commands.experiment import print_experiment

    print_experiment({"name": "cv", "path": str(tmp_path / "cv-old"), "status": "time_limit", "message": "m"})
    out = " ".join(capsys.readouterr().out.split())
    assert f"experiment cv-old: time_limit (m); continue it with `liverctl train --resume {tmp_path / 'cv-old'}`" in out


def test_a_completed_experiment_prints_no_missing_note_and_counts_its_cases_in_words(tmp_path, capsys):
    """`train --folds 0,0` on a store without train-only cases ended with "out-of-fold (1 cases, ...): volume
    Dice 0.1640, ...; None": the note, None where it does not hold, was printed as it was; `runs` said
    "decided on 1 out-of-fold cases"."""
    from typer.testing import CliRunner

    from liverctl.cli import app
    from liverctl.commands.experiment import print_experiment

    exp = _experiment(tmp_path)
    summary = folder.read_summary(exp)
    figures = {"volume_dice": 0.5, "slice_dice": 0.25, "global_dice": 0.75}
    summary.update(cv={"mean": 0.5, "std": 0.0, "folds": {"0": 0.5}},
                   oof={"cases": 1, "threshold": 0.5, "post": "none", "note": None, **figures})
    summary["decision"].update(cases=1, volume_dice=0.5)
    folder.write_summary(exp, summary)
    print_experiment({**summary, "path": str(exp)})
    out = " ".join(capsys.readouterr().out.split())
    assert "out-of-fold (1 case, threshold 0.5, no post-processing): volume Dice 0.5000, slice 0.2500, global " \
           "0.7500 decision" in out and "None" not in out
    assert "pooled out-of-fold (1 case, threshold" in tables.headline(summary)
    # one fold has no spread: it was "best volume Dice per fold fold 0 0.5000; 0.5000 +- 0.0000", `runs`'
    # folds cell "0.5000 +- 0.0000 (1)", the headline "per-fold best volume Dice 0.5000 +- 0.0000"
    assert "completed experiment cv: best volume Dice per fold fold 0 0.5000 out-of-fold" in out
    assert "per-fold best volume Dice 0.5000; pooled" in tables.headline(summary)
    result = CliRunner().invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "cv: decided on 1 out-of-fold case: threshold 0.4" in " ".join(result.stdout.split())
    assert "0.5000 (1)" in result.stdout and "+-" not in result.stdout.split("\n\n")[0].split("Experiments:")[0]

    summary["oof"].update(cases=3, note="out-of-fold predictions cover the cases in folds >= 0 only; ...")
    print_experiment({**summary, "path": str(exp)})
    out = " ".join(capsys.readouterr().out.split())
    assert "out-of-fold (3 cases, threshold 0.5" in out and "global 0.7500; out-of-fold predictions cover" in out


def test_the_bytes_checked_against_the_record_are_the_bytes_loaded_and_read_once(tmp_path, monkeypatch):
    """A fold's best.pt was hashed against experiment.json's record, then read again by torch.load: a file
    replaced in between (here the same checkpoint with other weights) was predicted with, unchecked; and the
    file was read twice. Now the bytes hashed are the bytes parsed, read once."""
    import os

    import torch
    from file_reads import count_reads

    import liverctl.infer.predict
    from liverctl.data import store as store_module
    from liverctl.experiment import train as experiment_train

    exp, labels, store, summary = _finished_folds_to_predict_again(tmp_path)
    folder.write_summary(exp, summary)
    for case in "ab":  # fold 0's held-out predictions are there: only fold 1 is loaded
        oof.write_oof_case(exp, case, labels[case].astype(float), 0)
    best1 = exp / "fold-1" / "checkpoints" / "best.pt"
    state = torch.load(best1, weights_only=True)
    recorded = {k: v.clone() for k, v in state["model"].items()}
    state["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["model"].items()}
    tampered = tmp_path / "tampered.pt"
    torch.save(state, tampered)
    real_load = torch.load

    def load_after_a_swap(source, *args, **kwargs):  # the file is replaced between the check and the load
        if tampered.exists():
            os.replace(tampered, best1)
        return real_load(source, *args, **kwargs)

    seen = []

    def predict_cases(runs, store, cases, **kwargs):
        seen.append(runs[0].model.state_dict())
        for case in cases:
            yield case, labels[case].astype(float)

    monkeypatch.setattr(store_module.LiverStore, "open", staticmethod(lambda path: store))
    monkeypatch.setattr(experiment_train._Folds, "train", lambda self, fold, entry: None)
    monkeypatch.setattr(liverctl.infer.predict, "predict_cases", predict_cases)
    monkeypatch.setattr(torch, "load", load_after_a_swap)
    reads = count_reads(monkeypatch, "best.pt")
    try:
        experiment_train.run_folds(exp, experiment_train.FoldOptions(device="cpu"))
    except LiverctlError as exc:  # refusing the replaced file would do too
        assert "not the checkpoint fold 1 produced" in str(exc)
    else:
        assert len(seen) == 1 and all(torch.equal(seen[0][k], v) for k, v in recorded.items())
    assert reads == [str(best1)]


def test_a_default_added_since_the_experiment_does_not_refuse_its_folds(tmp_path, monkeypatch):
    """A fold's config was compared with today's defaults filled in against experiment.json's as recorded: a
    key added to the defaults since (here train.new_key) refused every fold of an older experiment. The two
    records are compared as written; a fold that really differs is still refused."""
    import tomli_w
    from run_fixtures import add_model_checkpoint

    from liverctl import config
    from liverctl.experiment.ensemble import expand_runs

    exp = _experiment(tmp_path)
    _record_checkpoints(exp, record=False)  # the loaded checkpoint's config is then the only check of best.pt
    real_defaults = config.load_defaults

    def newer_defaults():
        defaults = real_defaults()
        defaults["train"]["new_key"] = 1
        return defaults

    monkeypatch.setattr(config, "load_defaults", newer_defaults)
    assert [r.cfg["train"]["new_key"] for r in expand_runs([exp]).load_models()] == [1, 1]
    fold1 = exp / "fold-1"
    recorded = config.read_recorded_config(fold1 / "config.toml")
    changed = {**recorded, "optim": {**recorded["optim"], "lr": 0.05}}
    (fold1 / "config.toml").write_text(tomli_w.dumps(changed), encoding="utf-8")
    with pytest.raises(LiverctlError, match="fold 1 was trained with optim.lr = 0.05, the experiment with"):
        expand_runs([exp])
    (fold1 / "config.toml").write_text(tomli_w.dumps(recorded), encoding="utf-8")
    add_model_checkpoint(fold1, changed)  # a best.pt trained with another learning rate
    with pytest.raises(LiverctlError, match="fold 1 was trained with optim.lr = 0.05, the experiment with"):
        expand_runs([exp]).load_models()


def test_an_experiment_begun_before_a_key_was_added_resumes_with_that_key_filled_in(tmp_path, monkeypatch):
    """experiment.json records the config the experiment began with. After an upgrade that added a key to the
    defaults, a resumed fold got that config as recorded, so the trainer's first read of the new key failed in a
    KeyError; and a fold trained since records the key, which the experiment lacks, and was refused as another
    experiment's. Simulated by deleting optim.weight_decay from the experiment's record and fold 0's."""
    import tomli_w

    from liverctl.config import load_defaults, read_recorded_config
    from liverctl.data import store as store_module
    from liverctl.experiment import train as experiment_train
    from liverctl.train import loop

    exp = _experiment(tmp_path, status="interrupted")
    summary = folder.read_summary(exp)
    summary.pop("decision")
    del summary["config"]["optim"]["weight_decay"]
    folder.write_summary(exp, summary)
    fold0, fold1 = folder.fold_dir(exp, 0), folder.fold_dir(exp, 1)
    before = read_recorded_config(fold0 / "config.toml")
    del before["optim"]["weight_decay"]
    (fold0 / "config.toml").write_text(tomli_w.dumps(before), encoding="utf-8")  # begun before the upgrade
    default = load_defaults()["optim"]["weight_decay"]
    since = read_recorded_config(fold1 / "config.toml")  # trained since: it records the key, at its default
    assert since["optim"]["weight_decay"] == default
    folder.check_fold_config(exp, summary, 1, since, str(fold1))
    since["optim"]["weight_decay"] = default * 3  # a fold that really differs is still another experiment's
    with pytest.raises(LiverctlError, match="fold 1 was trained with optim.weight_decay = 0.03"):
        folder.check_fold_config(exp, summary, 1, since, str(fold1))

    store = FakeStore({"a": 0, "b": 0, "c": 1, "d": 1}, n_folds=2, labels={c: liver() for c in "abcd"})
    monkeypatch.setattr(store_module.LiverStore, "open", staticmethod(lambda path: store))
    given = []

    def run_training(cfg, run_dir, **kwargs):
        given.append(cfg)
        raise KeyboardInterrupt  # what the trainer was given is the point

    monkeypatch.setattr(loop, "run_training", run_training)
    with pytest.raises(KeyboardInterrupt):
        experiment_train.run_folds(exp, experiment_train.FoldOptions(device="cpu"))
    assert [(cfg["data"]["fold"], cfg["optim"]["weight_decay"]) for cfg in given] == [(0, default)]


def test_a_lost_out_of_fold_chunk_file_is_named_never_read_as_probability_zero(tmp_path):
    """zarr-python left out all-zero chunks of oof.zarr, so a chunk file lost in a copy read as probability 0
    and the decision was made on it without a word. Every chunk is written and marked; a lost one is refused
    on read in one line, and counts as a missing case, which `train --resume` predicts again."""
    labels = {c: np.zeros((8, 8, 40), dtype=np.uint8) for c in "ab"}
    for label in labels.values():
        label[2:6, 2:6, 2:14] = 1  # slices 16..39 (chunks 1 and 2 of 16 slices) hold no liver
    store = FakeStore({"a": 0, "b": 1}, n_folds=2, labels=labels)
    for c in "ab":
        oof.write_oof_case(tmp_path, c, labels[c].astype(float), store.folds()[c])
    chunk = tmp_path / folder.OOF_STORE / "a" / "c" / "0" / "0" / "1"
    assert chunk.is_file()  # the all-zero chunk was written too
    chunk.unlink()
    message = r"out-of-fold.*case 'a'.*chunk file .*missing.*zeros.*`liverctl train --resume"
    with pytest.raises(LiverctlError, match=message) as caught:
        oof.read_oof_case(tmp_path, "a")
    assert Path(caught.value.path) == chunk and "\n" not in str(caught.value)
    with pytest.raises(LiverctlError, match=message):
        list(oof.iter_oof(tmp_path, store))
    assert oof.missing_cases(tmp_path, {"a": 0, "b": 1}) == ["a"]
    (tmp_path / folder.OOF_STORE / "b" / "c" / "0" / "0" / "2").write_bytes(b"")  # a copy cut short
    with pytest.raises(LiverctlError, match=r"chunk file .*empty") as caught:
        oof.read_oof_case(tmp_path, "b")
    assert Path(caught.value.path).name == "2"


def test_an_out_of_fold_store_from_before_the_marker_still_reads(tmp_path):
    """An array written without `every_chunk_written` left out its all-zero chunks: those read as 0, as before."""
    import zarr

    q = np.zeros((8, 8, 40), dtype=np.uint8)
    q[2:6, 2:6, 2:14] = 200
    group = zarr.open_group(str(tmp_path / folder.OOF_STORE), mode="a")
    array = group.create_array("a", shape=q.shape, dtype="uint8", chunks=(8, 8, 16))
    array[...] = q
    array.attrs.update({"fold": 0, "complete": True})
    assert not (tmp_path / folder.OOF_STORE / "a" / "c" / "0" / "0" / "1").exists()
    assert oof.oof_cases(tmp_path) == {"a": 0} and oof.missing_cases(tmp_path, {"a": 0}) == []
    assert np.array_equal(oof.read_oof_case(tmp_path, "a"), q)


@pytest.mark.parametrize("how", ["cut short", "bit flip"])
def test_an_undecodable_out_of_fold_chunk_file_is_one_line_naming_it(tmp_path, how):
    """A chunk file there but damaged (cut short) ended the decision in zstd's bare RuntimeError, naming nothing;
    deleting the case's array, as the line says, makes it a missing case that `train --resume` predicts again.
    A bit flipped inside the compressed data (its size kept) decoded to other probabilities without a word: the
    zstd frames carry their checksum now (`oof.OOF_ZSTD`), so it is named the same way."""
    labels = {"a": np.zeros((8, 8, 40), dtype=np.uint8)}
    labels["a"][2:6, 2:6, 2:30] = 1
    store = FakeStore({"a": 0}, n_folds=2, labels=labels)
    probs = labels["a"] * np.random.default_rng(0).uniform(0.5, 1.0, labels["a"].shape)  # not one value: literals
    oof.write_oof_case(tmp_path, "a", probs, 0)
    chunk = tmp_path / folder.OOF_STORE / "a" / "c" / "0" / "0" / "1"
    raw = bytearray(chunk.read_bytes())
    if how == "cut short":
        chunk.write_bytes(bytes(raw[:-8]))
    else:
        raw[len(raw) // 2] ^= 1
        chunk.write_bytes(bytes(raw))
    with pytest.raises(LiverctlError) as caught:
        list(oof.iter_oof(tmp_path, store))
    message = str(caught.value)
    assert message.startswith(f"{chunk}: out-of-fold prediction of case 'a': chunk file cannot be decoded (")
    assert "\n" not in message and f"delete {tmp_path / folder.OOF_STORE / 'a'} and run `liverctl train --resume" in message
    shutil.rmtree(tmp_path / folder.OOF_STORE / "a")
    assert oof.missing_cases(tmp_path, {"a": 0}) == ["a"]


def test_fuzz_experiment_summary_gives_a_summary_or_one_liverctl_error(tmp_path):
    """experiment.json is anyone's file: values replaced by other types, NaN, huge numbers, an integer of 5000 digits,
    deep nesting, long or odd text, truncated (scripts/fuzz_readers.py mutate_json), read by read_summary,
    summarize_experiment (runs, report) and `runs --json`. A ValueError and an AttributeError escaped before."""
    from collections import Counter

    from fuzz_script import load_fuzz_script, outcome
    from typer.testing import CliRunner

    from liverctl.cli import app
    from liverctl.experiment.summary import summarize_experiment

    fuzz = load_fuzz_script()
    exp = _experiment(tmp_path)
    summary = folder.read_summary(exp)
    summary.update(cv={"mean": 0.9, "std": 0.01, "folds": {"0": 0.89, "1": 0.9}}, fold_results={
        "0": {"status": "completed", "best": {"epoch": 1, "volume_dice": 0.9}, "checkpoints": {"best": "0" * 64}}})
    folder.write_summary(exp, summary)
    path = exp / folder.SUMMARY_FILE
    original = path.read_text(encoding="utf-8")
    rng = np.random.default_rng(5)
    outcomes = Counter()
    for case in range(120):
        text, what = fuzz.mutate_json(rng, original)
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        what = f"case {case}: {what}"
        outcomes[outcome(lambda: folder.read_summary(exp), what)] += 1
        outcome(lambda: summarize_experiment(exp), what)
        if case % 10 == 0:
            result = CliRunner().invoke(app, ["runs", str(tmp_path), "--json"])
            assert result.exit_code == 0 and result.exception is None, (what, result.output[-500:])
    assert outcomes["ok"] > 20 and outcomes["refused"] > 20, outcomes


def test_an_experiments_folder_and_lines_print_as_written(tmp_path, capsys):
    """An experiment under `--runs-dir 'exp[/]'` failed on rich's MarkupError at its first line (`say`), and one
    under `exp[bold]` printed its folder without the tag, in bold. Both now print as written (`esc`)."""
    from liverctl.commands.experiment import print_experiment
    from liverctl.commands.train import _say

    for where in ("exp[/]", "exp[bold]"):
        exp_dir = tmp_path / where / "cv"
        _say(f"fold 0: training {exp_dir / 'fold-0'}")
        print_experiment({"name": "cv", "path": str(exp_dir), "status": "interrupted", "message": "stopped [/] here"})
        out = " ".join(capsys.readouterr().out.split())
        assert out == (f"fold 0: training {exp_dir / 'fold-0'} experiment cv: interrupted (stopped [/] here); "
                       f"continue it with `liverctl train --resume {exp_dir}`")


def test_a_completed_experiment_without_an_out_of_fold_note_prints_none_of_it(capsys):
    """oof.note is None where no case is train-only ("said only where it holds"): the out-of-fold line ended in
    "; None"."""
    from liverctl.commands.experiment import print_experiment

    summary = {"name": "cv", "path": "runs/cv", "status": "completed", "cv": {"folds": {"0": 0.5}, "mean": 0.5, "std": 0.0},
               "oof": {"cases": 6, "threshold": 0.5, "volume_dice": 0.5, "slice_dice": 0.5, "global_dice": 0.5, "note": None},
               "decision": {"threshold": 0.5, "post": "none", "volume_dice": 0.5, "options": []}}
    print_experiment(summary)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == ("out-of-fold (6 cases, threshold 0.5, no post-processing): volume Dice 0.5000, slice 0.5000, "
                        "global 0.5000")
    summary["oof"]["note"] = "2 train-only cases (fold -2) are never held out"
    print_experiment(summary)
    assert capsys.readouterr().out.splitlines()[1].endswith("global 0.5000; 2 train-only cases (fold -2) are never held out")

"""A run's validation cases, one rule (`liverctl.runs.validation_cases`): training's `split_rows`, the
cases `submit`'s `auto` scores on, and the cases `report` predicts are the same."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from run_fixtures import add_model_checkpoint, make_config, make_run

from liverctl.data.dataset import split_rows
from liverctl.data.store import LiverStore
from liverctl.errors import LiverctlError
from liverctl.infer import submit
from liverctl.infer.predict import load_run_models
from liverctl.report.build import write_report
from liverctl.runs.validation_cases import checked_validation_cases, validation_cases


def _cases_of_rows(store, rows) -> list[str]:
    index = store.slice_index()
    return [index.case_ids[c] for c in sorted(set(np.asarray(index.case)[rows].tolist()))]


@pytest.fixture(scope="module")
def two_fold_store(tiny_dataset, tmp_path_factory):
    """The tiny dataset in two folds: several cases per fold, so that `max_val_cases` makes a difference."""
    from liverctl.data.ingest import ingest_folder

    store = tmp_path_factory.mktemp("two-folds") / "liver.zarr"
    assert ingest_folder(tiny_dataset, store=store, n_folds=2, workers=1).ok
    return store


def test_validation_cases_are_training_s_held_out_cases(two_fold_store):
    store = LiverStore.open(two_fold_store)
    cfg = make_config("demo", {"data.fold": 0, "data.max_val_cases": 0})
    every = validation_cases(cfg, store)
    assert every == _cases_of_rows(store, split_rows(store, 0)[1])
    assert every == sorted(c for c, f in store.folds().items() if f == 0)
    capped = validation_cases(make_config("demo", {"data.fold": 0, "data.max_val_cases": 1}), store)
    assert capped == every[:1] and capped == _cases_of_rows(store, split_rows(store, 0, 1)[1])


def test_report_and_submit_agree_on_the_validation_cases(two_fold_store, tmp_path):
    store = LiverStore.open(two_fold_store)
    fold0 = sorted(c for c, f in store.folds().items() if f == 0)
    assert len(fold0) >= 2  # else max_val_cases below could not make a difference
    settings = {"data.input_size": 64, "data.store": str(two_fold_store), "model.encoder": "resnet18",
                "model.decoder_channels": [32, 16, 8, 8, 4], "infer.tta": "none", "data.max_val_cases": 1}
    run = make_run(tmp_path / "runs", "capped", preset="demo", settings=settings, checkpoint=False)
    cfg = make_config("demo", settings)
    add_model_checkpoint(run, cfg)
    result = write_report([run], tmp_path / "rep", max_cases=10, slices_per_case=1)
    reported = [c.case for c in result.cases["capped"]]
    notes = []
    scored_by_auto = submit.validation_cases(SimpleNamespace(cfg=cfg, cases=None, checkpoint="best.pt"), store,
                                             notes.append)
    assert reported == scored_by_auto == fold0[:1]  # max_val_cases holds for both, as in training
    # a checkpoint from before the record: scored on the store's fold as it is now, and both say so
    assert notes[0].startswith("best.pt records no training cases (written before liverctl recorded them)")
    assert result.warnings == [f"capped: {run / 'checkpoints' / 'best.pt'}{notes[0].removeprefix('best.pt')}"]


def test_a_run_is_not_scored_on_cases_it_trained_on(two_fold_store, tmp_path):
    """On a store re-ingested with other folds, report scored a run on cases it had trained on, and submit's
    auto chose its clean-up on them, without a word: the run's checkpoint now records its split."""
    store = LiverStore.open(two_fold_store)
    cfg = make_config("demo", {"data.fold": 0})
    fold0 = validation_cases(cfg, store)
    fold1 = sorted(c for c, f in store.folds().items() if f == 1)
    kept = {"training": fold1, "validation": fold0}
    assert checked_validation_cases(cfg, kept, store, "best.pt") == (fold0, None)
    swapped = {"training": [fold0[-1], *fold1[1:]], "validation": [fold1[0], *fold0[:-1]]}
    with pytest.raises(LiverctlError) as info:
        checked_validation_cases(cfg, swapped, store, "r/best.pt")
    assert str(info.value).startswith(f"r/best.pt: refused to score the run on store {two_fold_store}: 1 of the "
                                      f"cases it holds out as fold 0 are cases the run trained on ({fold0[-1]}); ")
    cases, note = checked_validation_cases(cfg, None, store, "r/best.pt")  # a checkpoint from before the record
    assert cases == fold0 and note.startswith("r/best.pt records no training cases")
    assert "not checked against what the run trained on" in note

    settings = {"data.input_size": 64, "data.store": str(two_fold_store), "model.encoder": "resnet18",
                "model.decoder_channels": [32, 16, 8, 8, 4], "infer.tta": "none", "data.fold": 0}
    run = make_run(tmp_path / "runs", "swapped", preset="demo", settings=settings, checkpoint=False)
    add_model_checkpoint(run, make_config("demo", settings), cases=swapped)  # report and auto read the .pt's record
    (model,) = load_run_models([run], device="cpu")
    with pytest.raises(LiverctlError, match=f"^{run / 'checkpoints' / 'best.pt'}: refused to score the run on store"):
        submit.validation_cases(model, store)
    result = write_report([run], tmp_path / "rep", max_cases=10, slices_per_case=1, device="cpu")
    assert result.cases == {} and len(result.refused) == 1 and result.warnings == []
    assert result.refused[0].startswith(f"swapped: store {two_fold_store}: {run / 'checkpoints' / 'best.pt'}: refused")

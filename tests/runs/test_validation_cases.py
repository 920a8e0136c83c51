"""A run's validation cases, one rule (`liverctl.runs.validation_cases`): training's `split_rows`, the
cases `submit`'s `auto` scores on, and the cases `report` predicts are the same."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from run_fixtures import add_model_checkpoint, make_config, make_run

from liverctl.data.dataset import split_rows
from liverctl.data.store import LiverStore
from liverctl.infer import submit
from liverctl.report.build import write_report
from liverctl.runs.validation_cases import validation_cases


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
    scored_by_auto = submit.validation_cases(SimpleNamespace(cfg=cfg), store)
    assert reported == scored_by_auto == fold0[:1]  # max_val_cases holds for both, as in training

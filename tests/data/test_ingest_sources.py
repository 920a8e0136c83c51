"""Several sources into one store: competition + LiTS + Decathlon + nnU-Net built from synthetic volumes
and the real CT samples; extra cases never validated on; adding a source keeps the folds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from source_fixtures import build_sources
from typer.testing import CliRunner

from liverctl.cli import app
from liverctl.data import dataset as ds
from liverctl.data.ingest import ingest_folder, ingest_sources
from liverctl.data.schema import TRAIN_ONLY_FOLD
from liverctl.data.store import LiverStore
from liverctl.errors import LiverctlError

LITS_LABELS = {"lits": [1, 2]}


@pytest.fixture(scope="module")
def sources(tiny_dataset, real_dataset, tmp_path_factory):
    return build_sources(tmp_path_factory.mktemp("sources"), tiny_dataset)


@pytest.fixture(scope="module")
def all_store(sources, tmp_path_factory) -> Path:
    """The four sources ingested together (read-only)."""
    store = tmp_path_factory.mktemp("all") / "liver.zarr"
    summary = ingest_sources(
        [sources.comp, sources.lits, sources.msd, sources.nnunet], store, liver_labels=LITS_LABELS, workers=2
    )
    assert summary.ok, summary.failures
    return store


def label_of(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def test_four_layouts_in_one_store(all_store, sources):
    store = LiverStore.open(all_store)
    by_source: dict[str, list[str]] = {}
    for case_id, name in store.case_sources().items():
        by_source.setdefault(name, []).append(case_id)
        assert store.meta(case_id)["source_name"] == name
    assert by_source == {
        "competition": [str(i) for i in range(8)],
        "decathlon": ["liver_0", "liver_1"],
        "lits": ["lits-0", "lits-1", "lits-2"],
        "nnunet": ["dcmqi"],
    }
    assert store.case_ids("test") == ["6", "7"]  # extra sources' test volumes are left out
    records = {r["name"]: r for r in store.attrs["sources"]}
    assert {n: (r["layout"], r["role"], r["in_folds"], r["prefix"]) for n, r in records.items()} == {
        "competition": ("competition", "main", True, ""),
        "lits": ("lits", "extra", False, "lits-"),
        "decathlon": ("decathlon", "extra", False, ""),
        "nnunet": ("nnunet", "extra", False, ""),
    }


def test_liver_labels_per_source(all_store, sources):
    store = LiverStore.open(all_store)
    lits_label = label_of(sources.lits / "Training Batch 1" / "segmentation-0.nii.gz")
    assert (lits_label == 2).any()  # the tumour is liver for LiTS (1,2 given)
    assert store.meta("lits-0")["liver_voxels"] == int(np.isin(lits_label, [1, 2]).sum())
    assert store.meta("lits-0")["liver_labels"] == [1, 2]
    assert store.meta("liver_0")["liver_labels"] == [1, 2]  # liver + cancer from dataset.json
    dcmqi = label_of(sources.nnunet / "labelsTr" / "dcmqi.nii.gz")
    assert (dcmqi == 2).any()  # spine: named, not liver
    assert store.meta("dcmqi")["liver_voxels"] == int((dcmqi == 1).sum())
    np.testing.assert_array_equal(store.read_label_slice("dcmqi", 1), (dcmqi[..., 1] == 1).astype(np.uint8))


def test_extra_cases_are_train_only_and_never_validated_on(all_store):
    store = LiverStore.open(all_store)
    sources = store.case_sources()
    folds = store.folds()
    extras = {c for c, s in sources.items() if s != "competition"}
    assert {folds[c] for c in extras} == {TRAIN_ONLY_FOLD}
    assert sorted(f for c, f in folds.items() if c not in extras) == [0, 1, 2, 3, 4, 4]
    index = store.slice_index()
    for fold in range(5):  # the split training takes, for every fold
        train_rows, val_rows = ds.split_rows(store, fold)
        val_cases = {index.case_id(r) for r in val_rows}
        train_cases = {index.case_id(r) for r in train_rows}
        assert val_cases and not val_cases & extras
        assert extras <= train_cases  # every extra case is trained on
        assert not train_cases & {"6", "7"} and not val_cases & train_cases
    with pytest.raises(LiverctlError, match=r"^fold -2 is no fold; the store.s training cases are in folds 0, 1, 2, 3, 4: choose one with --set data.fold=0$"):
        ds.split_rows(store, TRAIN_ONLY_FOLD)


def test_extra_in_folds_deals_them_into_the_folds(sources, tmp_path):
    store_path = tmp_path / "s.zarr"
    summary = ingest_sources(
        [sources.comp, sources.lits], store_path, liver_labels=LITS_LABELS, extra_in_folds=True, workers=1
    )
    assert summary.ok and summary.sources["lits"].in_folds
    store = LiverStore.open(store_path)
    folds = store.folds()
    per_fold = [list(folds.values()).count(f) for f in range(5)]
    assert sorted(per_fold) == [1, 2, 2, 2, 2] and TRAIN_ONLY_FOLD not in folds.values()
    validated = set()
    for fold in range(5):
        _, val_rows = ds.split_rows(store, fold)
        validated |= {store.slice_index().case_id(r) for r in val_rows}
    assert {"lits-0", "lits-1", "lits-2"} <= validated


def test_adding_a_source_ingests_only_its_cases_and_keeps_the_folds(sources, tmp_path):
    store_path = tmp_path / "s.zarr"
    ingest_folder(sources.comp, store_path, workers=1)
    before = LiverStore.open(store_path)
    folds_before = before.folds()
    meta_before = {c: (store_path / "cases" / c / "zarr.json").read_bytes() for c in before.case_ids()}

    summary = ingest_sources([sources.msd], store_path, workers=1)
    assert summary.ok and sorted(summary.ingested) == ["liver_0", "liver_1"] and summary.unchanged == []
    after = LiverStore.open(store_path)
    assert {c: f for c, f in after.folds().items() if c in folds_before} == folds_before
    assert {c: (store_path / "cases" / c / "zarr.json").read_bytes() for c in meta_before} == meta_before
    assert after.folds()["liver_0"] == TRAIN_ONLY_FOLD

    # A source given again with the others changes nothing; with --extra-in-folds its cases join the
    # folds, still without moving a competition case.
    again = ingest_sources([sources.comp, sources.msd], store_path, workers=1)
    assert again.ingested == [] and len(again.unchanged) == 10
    ingest_sources([sources.comp, sources.msd], store_path, extra_in_folds=True, workers=1)
    joined = LiverStore.open(store_path).folds()
    assert {c: f for c, f in joined.items() if c in folds_before} == folds_before
    assert joined["liver_0"] >= 0 and joined["liver_1"] >= 0


def test_an_ingest_that_finishes_while_another_plans_is_not_overwritten(sources, tmp_path, monkeypatch):
    """Ingest planned its sources before taking the store's lock: one that finished in between (here the
    competition source, ingested first into the empty store) was planned as absent, so this one's source became
    the main one too and its record replaced the other's. It is planned again under the lock now."""
    import contextlib

    from liverctl.data import ingest

    store_path, real_lock, other = tmp_path / "s.zarr", ingest.exclusive_work_dir, {}

    @contextlib.contextmanager
    def another_ingest_first(store):
        if not other:  # the first ingest to reach the lock lets another one run to its end before it takes it
            other["started"] = True
            other["summary"] = ingest_folder(sources.comp, store_path, workers=1)
        with real_lock(store) as work:
            yield work

    monkeypatch.setattr(ingest, "exclusive_work_dir", another_ingest_first)
    summary = ingest_sources([sources.msd], store_path, workers=1)
    assert other["summary"].ok and summary.ok
    store = LiverStore.open(store_path)
    roles = {r["layout"]: r["role"] for r in store.attrs["sources"]}
    assert roles == {"competition": "main", "decathlon": "extra"}
    assert store.folds()["liver_0"] == TRAIN_ONLY_FOLD and store.case_ids("test") == ["6", "7"]


def test_a_store_from_before_sources_adopts_its_cases(sources, tiny_store, tmp_path):
    """A store written before sources existed: its cases belong to the main source, nothing re-read."""
    store_path = tmp_path / "old.zarr"
    shutil.copytree(tiny_store, store_path)
    for zarr_json in [store_path / "zarr.json", *(store_path / "cases").glob("*/zarr.json")]:
        meta = json.loads(zarr_json.read_text())
        meta["attributes"].pop("source_name", None)
        meta["attributes"].pop("sources", None)
        zarr_json.write_text(json.dumps(meta))
    folds_before = LiverStore.open(store_path).folds()
    summary = ingest_sources([sources.comp, sources.msd], store_path, workers=1)
    assert sorted(summary.ingested) == ["liver_0", "liver_1"] and len(summary.unchanged) == 8
    store = LiverStore.open(store_path)
    assert {c: f for c, f in store.folds().items() if c in folds_before} == folds_before
    assert set(store.case_sources().values()) == {"competition", "decathlon"}


def test_label_value_that_dataset_json_does_not_name_is_reported(sources, tmp_path):
    msd = tmp_path / "msd"
    shutil.copytree(sources.msd, msd, symlinks=True)
    bad_label = msd / "labelsTr" / "liver_1.nii.gz"
    data = label_of(bad_label).astype(np.uint8)
    data[0, 0, 0] = 7
    bad_label.unlink()
    nib.save(nib.Nifti1Image(data, nib.load(str(msd / "imagesTr" / "liver_1.nii.gz")).affine), str(bad_label))
    summary = ingest_sources([sources.comp, msd], tmp_path / "s.zarr", workers=1)
    assert len(summary.failures) == 1
    assert str(bad_label) in summary.failures[0] and "holds label value 7 that" in summary.failures[0]
    assert "liver_0" in LiverStore.open(tmp_path / "s.zarr").case_ids()  # the others go on
    # Saying which values mean liver for that source is an answer: the case goes in.
    fixed = ingest_sources(
        [sources.comp, f"decathlon={msd}"], tmp_path / "s.zarr", liver_labels={"decathlon": [1, 2]}, workers=1
    )
    assert fixed.ok and fixed.ingested == ["liver_1"]


def test_totalsegmentator_folders_as_published(sources, real_dataset, tmp_path):
    """The real TotalSegmentator samples in their dataset's layout, as an extra source: ingested without
    renaming, the liver labels named by the layout; a subject whose liver.nii.gz is in truth the 104-class
    multilabel map, and one with no mask (dcmqi's folder as shipped), are one line each."""
    ts = tmp_path / "Totalsegmentator_dataset"
    example, dicom20 = (real_dataset.sources[name] for name in ("totalseg-example", "totalseg-dicom20"))
    for subject, (ct, liver) in {"s0001": example, "s0002": dicom20}.items():
        (ts / subject / "segmentations").mkdir(parents=True)
        (ts / subject / "ct.nii.gz").symlink_to(ct)
        (ts / subject / "segmentations" / "liver.nii.gz").symlink_to(liver)
    (ts / "s0003" / "segmentations").mkdir(parents=True)
    (ts / "s0003" / "ct.nii.gz").symlink_to(example[0])
    multilabel = ts / "s0003" / "segmentations" / "liver.nii.gz"
    multilabel.symlink_to(example[1].parent / "multilabel.nii.gz")
    shutil.copytree(real_dataset.sources["dcmqi-3slice"][0].parent, ts / "s0004")  # ct.nii.gz, label.nii.gz
    result = run_cli("ingest", str(sources.comp), str(ts), "--store", str(tmp_path / "s.zarr"), "--workers", "1")
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"error: {ts / 's0004' / 'ct.nii.gz'}: has no liver mask" in errors[0]
    assert errors[1].startswith(f"error: {multilabel}: holds label values 2, 3, 4, 5, 6, ...")
    assert "that TotalSegmentator's liver.nii.gz does not name (it names [0, 1])" in errors[1]
    assert "totalseg (totalseg, extra): 2 train, 0 test; 2 ingested" in result.stdout
    store = LiverStore.open(tmp_path / "s.zarr")
    assert {c: s for c, s in store.case_sources().items() if s == "totalseg"} == {
        "s0001": "totalseg",
        "s0002": "totalseg",
    }
    for case_id, (_, liver) in {"s0001": example, "s0002": dicom20}.items():
        assert store.meta(case_id)["liver_voxels"] == int((label_of(liver) == 1).sum()) > 0


def multi_organ(liver: np.ndarray, liver_value: int, others: tuple[int, ...]) -> np.ndarray:
    """A multi-organ label map from a 0/1 liver label: the liver as `liver_value`, and each of `others` a block
    outside the liver (another organ)."""
    out = np.where(liver == 1, liver_value, 0).astype(np.uint8)
    for i, value in enumerate(others):
        block = out[i * 2 : i * 2 + 2, :2, :]
        block[block == 0] = value
    return out


def test_btcv_as_published_ingests_its_label_6_as_liver(tiny_dataset, sources, tmp_path):
    """BTCV's RawData/Training/img/img0001.nii.gz + Training/label/label0001.nii.gz was no layout liverctl knew
    ("recognises none of the layouts"). Now its layout names BTCV's 13 labels: liver 6 and nothing else is liver,
    the other organs are not; a label holding a value BTCV does not name is refused, asking for --liver-labels."""
    raw = tmp_path / "Abdomen" / "RawData"
    for i, case in ((1, 1), (2, 2)):
        volume = tiny_dataset / "train" / "volume" / f"volume-{case}.nii.gz"
        (raw / "Training" / "img").mkdir(parents=True, exist_ok=True)
        (raw / "Training" / "img" / f"img{i:04d}.nii.gz").symlink_to(volume)
        liver = label_of(tiny_dataset / "train" / "segmentation" / f"segmentation-{case}.nii.gz")
        label = multi_organ(liver, 6, (1, 13) if i == 1 else (14,))  # 14: no BTCV organ
        (raw / "Training" / "label").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(label, nib.load(str(volume)).affine), str(raw / "Training" / "label" / f"label{i:04d}.nii.gz"))
    (raw / "Testing" / "img").mkdir(parents=True)
    (raw / "Testing" / "img" / "img0061.nii.gz").symlink_to(tiny_dataset / "test" / "volume-6.nii.gz")
    result = run_cli("ingest", str(sources.comp), str(tmp_path / "Abdomen"), "--store", str(tmp_path / "s.zarr"),
                     "--workers", "1")
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors[0] == (f"error: {raw / 'Training' / 'label' / 'label0002.nii.gz'}: holds label value 14 that BTCV's "
                         "label list does not name (it names [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]); give "
                         "--liver-labels for this source to say which values mean liver")
    assert "btcv (btcv, extra): 1 train, 0 test; 1 ingested" in result.stdout
    store = LiverStore.open(tmp_path / "s.zarr")
    assert {c for c, s in store.case_sources().items() if s == "btcv"} == {"img0001"}
    label = label_of(raw / "Training" / "label" / "label0001.nii.gz")
    assert store.meta("img0001")["liver_labels"] == [6]
    assert store.meta("img0001")["liver_voxels"] == int((label == 6).sum()) > 0
    assert {r["name"]: r["layout"] for r in store.attrs["sources"]}["btcv"] == "btcv"


def test_flare22_as_published_ingests_its_label_1_as_liver_only(tiny_dataset, sources, tmp_path):
    """FLARE22's images/ + labels/ was no layout liverctl knew; now its 13-organ labels go in with liver = 1 only
    (the other organs, values 2-13, are not liver)."""
    flare = tmp_path / "FLARE22Train"
    volume = tiny_dataset / "train" / "volume" / "volume-1.nii.gz"
    (flare / "images").mkdir(parents=True)
    (flare / "labels").mkdir()
    (flare / "images" / "FLARE22_Tr_0001_0000.nii.gz").symlink_to(volume)
    label = multi_organ(label_of(tiny_dataset / "train" / "segmentation" / "segmentation-1.nii.gz"), 1, (3, 13))
    nib.save(nib.Nifti1Image(label, nib.load(str(volume)).affine), str(flare / "labels" / "FLARE22_Tr_0001.nii.gz"))
    summary = ingest_sources([sources.comp, flare], tmp_path / "s.zarr", workers=1)
    assert summary.ok, summary.failures
    store = LiverStore.open(tmp_path / "s.zarr")
    assert store.meta("FLARE22_Tr_0001")["liver_labels"] == [1]
    assert store.meta("FLARE22_Tr_0001")["liver_voxels"] == int((label == 1).sum()) < int((label > 0).sum())


def test_unrecognised_or_unlabelled_source_writes_nothing(sources, tmp_path):
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "a.nii.gz").write_bytes(b"")
    with pytest.raises(LiverctlError, match="recognises none of the layouts"):
        ingest_sources([sources.comp, tmp_path / "scans"], tmp_path / "s.zarr", workers=1)
    with pytest.raises(LiverctlError, match="nothing names its label values"):
        ingest_sources([sources.comp, sources.lits], tmp_path / "s.zarr", workers=1)
    assert not (tmp_path / "s.zarr").exists()


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def test_cli_dry_run_prints_each_source_and_writes_nothing(sources, tmp_path):
    store = tmp_path / "s.zarr"
    args = ["ingest", str(sources.comp), str(sources.lits), str(sources.msd), str(sources.nnunet), "--store", str(store)]
    result = run_cli(*args, "--liver-labels", "lits=1,2", "--dry-run")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "competition (competition, main, in the folds)" in out
    assert "lits (lits, extra, train-only)" in out and "ids prefixed 'lits-'" in out
    assert "3 training cases (volume + label pairs), 0 test" in out
    assert "liver labels 1,2 (from dataset.json)" in out and "test volume left out" in out
    assert not store.exists()
    unlabelled = run_cli(*args, "--dry-run")
    assert unlabelled.exit_code == 2 and "--liver-labels lits=" in unlabelled.stderr
    assert not store.exists()


def test_cli_dry_run_prints_a_path_holding_markup_as_written(sources, tmp_path):
    """A folder name is anyone's text: `[/x]` in it once ended the dry run in rich's MarkupError."""
    import shutil

    odd = tmp_path / "data[/x][bold]"
    shutil.copytree(sources.comp, odd)
    result = run_cli("ingest", str(odd), "--store", str(tmp_path / "s[/y].zarr"), "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"competition (competition, main, in the folds): {odd}" in result.stdout
    assert f"already in {tmp_path / 's[/y].zarr'}" in result.stdout


def test_cli_ingest_prints_counts_per_source(sources, tmp_path):
    store = tmp_path / "s.zarr"
    result = run_cli(
        "ingest", str(sources.comp), str(sources.msd), "--store", str(store), "--workers", "1"
    )
    assert result.exit_code == 0, result.output
    assert "competition (competition, main): 6 train, 2 test; 8 ingested" in result.stdout
    assert "decathlon (decathlon, extra): 2 train, 0 test; 2 ingested, 0 unchanged; folds train-only:2" in (
        result.stdout
    )
    assert "10 cases (8 train, 2 test; 10 ingested, 0 unchanged)" in result.stdout


@pytest.mark.slow
def test_demo_training_uses_every_source(all_store, tmp_path):
    """One tiny epoch over the four-source store: the extra cases are in the training rows."""
    result = run_cli(
        "train", "--preset", "demo", "--store", str(all_store), "--runs-dir", str(tmp_path / "runs"),
        "--name", "multi", "--epochs", "1", "--device", "cpu", "--quiet",
        "--set", "data.input_size=64", "--set", "train.batch_size=8",
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "multi" / "checkpoints" / "last.pt").exists()


def test_kaggles_lits_in_two_archives_ingests_from_the_folder_above_them(real_dataset, tmp_path):
    """Kaggle's liver-tumor-segmentation and its part 2, unpacked side by side (archive/volume_pt1,
    archive/segmentations, 'archive (1)/volume_pt6'), were 'not recognised' from the folder holding both; the
    volumes of part 2 lie three levels down. Real CT here: every case goes in, its liver as its label says."""
    root = tmp_path / "lits"
    cases = {"0": ("archive/volume_pt1", "totalseg-example"), "120": ("archive (1)/volume_pt6", "totalseg-dicom20")}
    for i, (part, name) in cases.items():
        ct, label = real_dataset.sources[name]
        (root / part).mkdir(parents=True, exist_ok=True)
        (root / "archive" / "segmentations").mkdir(parents=True, exist_ok=True)
        (root / part / f"volume-{i}.nii.gz").symlink_to(ct)
        (root / "archive" / "segmentations" / f"segmentation-{i}.nii.gz").symlink_to(label)
    result = CliRunner().invoke(app, ["ingest", str(root), "--store", str(tmp_path / "s.zarr"),
                                      "--liver-labels", "1,2", "--workers", "1"])
    assert result.exit_code == 0 and "2 cases (2 train, 0 test; 2 ingested" in result.stdout, result.output
    store = LiverStore.open(tmp_path / "s.zarr")
    for i, (_, name) in cases.items():
        assert store.meta(i)["liver_voxels"] == int((label_of(real_dataset.sources[name][1]) > 0).sum()) > 0


@pytest.mark.parametrize(("damage", "problem"), [
    (lambda sources: sources[0].update(prefix=-1), "holds a prefix of int, not text"),
    (lambda sources: sources[0].update(path=["x"]), "holds a path of list, not text"),
    (lambda sources: sources[0].update(role=1.5), "holds a role of 1.5, not 'main' or 'extra'"),
    (lambda sources: 2**31, "its 'sources' is a int, not a list"),
])
def test_a_damaged_record_of_the_stores_sources_is_one_line(tiny_dataset, tiny_store, tmp_path, damage, problem):
    """A later ingest takes each source's path, role and id prefix from the store's zarr.json (anyone's file): a
    prefix of -1 ended it in TypeError (int + str, claiming ids), a 'sources' of a number in TypeError (not
    iterable; scripts/fuzz_readers.py json). Now one line names the file."""
    store = tmp_path / "copy.zarr"
    shutil.copytree(tiny_store, store)
    meta = json.loads((store / "zarr.json").read_text())
    sources = meta["attributes"]["sources"]
    meta["attributes"]["sources"] = damage(sources) or sources
    (store / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(LiverctlError) as info:
        ingest_folder(tiny_dataset, store=store, workers=1)
    assert str(info.value).startswith(f"{store / 'zarr.json'}: the store's record of its sources is damaged")
    assert problem in str(info.value) and "\n" not in str(info.value)

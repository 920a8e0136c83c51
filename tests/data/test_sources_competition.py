"""Finding cases: case ids, pairing by id (never by order), accepted layouts, per-case problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from liverctl.data.sources import case_id_from_name, find_cases
from liverctl.errors import LiverctlError


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize(
    ("name", "case_id"),
    [
        ("volume-12.nii.gz", "12"),
        ("segmentation-12.nii", "12"),
        ("volume-12.NII.GZ", "12"),
        ("ct_7.nii.gz", "ct_7"),
        ("volume-totalseg-example.nii.gz", "totalseg-example"),
        ("my.volume.nii", "my.volume"),
    ],
)
def test_case_id_from_name(name, case_id):
    assert case_id_from_name(name) == case_id


def test_pairs_by_id_not_by_sort_order(tmp_path):
    # Sorted by name, volume-10 comes before volume-9 while segmentation-9 ... the ids still pair.
    for i in (9, 10, 100):
        touch(tmp_path / "train" / "volume" / f"volume-{i}.nii")
        touch(tmp_path / "train" / "segmentation" / f"segmentation-{i}.nii.gz")
    layout = find_cases(tmp_path)
    assert not layout.problems
    for case in layout.cases:
        assert case.volume.name.startswith(f"volume-{case.case_id}.")
        assert case.label.name.startswith(f"segmentation-{case.case_id}.")
    assert [c.case_id for c in layout.cases] == ["10", "100", "9"]


@pytest.mark.parametrize("test_folder", ["test", "test/volume"])
def test_test_volumes_in_either_folder(tmp_path, test_folder):
    touch(tmp_path / test_folder / "volume-3.nii.gz")
    touch(tmp_path / "test_labels" / "segmentation-3.nii.gz")  # written by synth, ignored here
    layout = find_cases(tmp_path)
    assert [(c.case_id, c.split, c.label) for c in layout.cases] == [("3", "test", None)]
    assert not layout.problems


def test_other_files_are_ignored(tmp_path):
    touch(tmp_path / "train" / "volume" / "volume-1.nii.gz")
    touch(tmp_path / "train" / "segmentation" / "segmentation-1.nii.gz")
    touch(tmp_path / "train" / "volume" / "notes.txt")
    touch(tmp_path / "train" / "volume" / ".volume-2.nii.gz.tmp")
    layout = find_cases(tmp_path)
    assert [c.case_id for c in layout.cases] == ["1"] and not layout.problems


def test_unpaired_files_are_problems_and_the_rest_goes_on(tmp_path):
    touch(tmp_path / "train" / "volume" / "volume-1.nii.gz")
    touch(tmp_path / "train" / "segmentation" / "segmentation-1.nii.gz")
    lonely_volume = touch(tmp_path / "train" / "volume" / "volume-2.nii.gz")
    lonely_label = touch(tmp_path / "train" / "segmentation" / "segmentation-3.nii.gz")
    layout = find_cases(tmp_path)
    assert [c.case_id for c in layout.cases] == ["1"]
    messages = [str(p) for p in layout.problems]
    assert any(str(lonely_volume) in m and "no label" in m for m in messages)
    assert any(str(lonely_label) in m and "no volume" in m for m in messages)
    assert all("\n" not in m for m in messages)


def test_duplicate_case_ids_are_problems(tmp_path):
    touch(tmp_path / "train" / "volume" / "volume-4.nii")
    touch(tmp_path / "train" / "volume" / "volume-4.nii.gz")
    touch(tmp_path / "train" / "segmentation" / "segmentation-4.nii.gz")
    touch(tmp_path / "test" / "volume-5.nii.gz")
    touch(tmp_path / "test" / "volume" / "volume-5.nii.gz")
    layout = find_cases(tmp_path)
    assert layout.cases == []
    messages = " | ".join(str(p) for p in layout.problems)
    assert "case id '4' is also used by" in messages
    assert "case id '5' is also used by" in messages


def test_same_id_in_train_and_test_is_a_problem(tmp_path):
    touch(tmp_path / "train" / "volume" / "volume-6.nii.gz")
    touch(tmp_path / "train" / "segmentation" / "segmentation-6.nii.gz")
    touch(tmp_path / "test" / "volume-6.nii.gz")
    layout = find_cases(tmp_path)
    assert layout.cases == []
    assert "training volume" in str(layout.problems[0]) and "test volume" in str(layout.problems[0])


def test_missing_or_empty_folder_is_an_error(tmp_path):
    with pytest.raises(LiverctlError, match="no such folder"):
        find_cases(tmp_path / "nope")
    with pytest.raises(LiverctlError, match="no NIfTI volumes found"):
        find_cases(tmp_path)
    (tmp_path / "train" / "volume").mkdir(parents=True)
    with pytest.raises(LiverctlError, match="no NIfTI volumes found"):
        find_cases(tmp_path)
    touch(tmp_path / "file.nii")
    with pytest.raises(LiverctlError, match="is a file"):
        find_cases(tmp_path / "file.nii")

"""Data sources: each layout found and recognised, dataset.json label names, and the ingest plan
(names, roles, id prefixes, liver labels per source) - without reading any image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from liverctl.data.sources import LAYOUTS, detect_layout, find_source
from liverctl.data.sources.labels import label_names, liver_values
from liverctl.data.sources.plan import (
    EXTRA,
    MAIN,
    parse_layout_option,
    parse_liver_labels_option,
    plan_sources,
)
from liverctl.errors import LiverctlError


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def competition(root: Path, ids=(1, 2), tests=(9,)) -> Path:
    for i in ids:
        touch(root / "train" / "volume" / f"volume-{i}.nii.gz")
        touch(root / "train" / "segmentation" / f"segmentation-{i}.nii.gz")
    for i in tests:
        touch(root / "test" / f"volume-{i}.nii.gz")
    return root


def lits(root: Path, ids=(0, 1, 2)) -> Path:
    for i in ids:
        batch = "Training Batch 1" if i < 2 else "Training Batch 2"
        touch(root / batch / f"volume-{i}.nii")
        touch(root / batch / f"segmentation-{i}.nii")
    touch(root / "Test Batch" / "test-volume-0.nii")
    return root


def decathlon(root: Path, labels=None, listed=True) -> Path:
    for i in (0, 1):
        touch(root / "imagesTr" / f"liver_{i}.nii.gz")
        touch(root / "labelsTr" / f"liver_{i}.nii.gz")
    touch(root / "imagesTs" / "liver_5.nii.gz")
    touch(root / "imagesTr" / "._liver_0.nii.gz")  # macOS junk in the published tarball
    payload = {"labels": labels or {"0": "background", "1": "liver", "2": "cancer"}}
    if listed:
        payload["training"] = [
            {"image": f"./imagesTr/liver_{i}.nii.gz", "label": f"./labelsTr/liver_{i}.nii.gz"} for i in (0, 1)
        ]
        payload["test"] = ["./imagesTs/liver_5.nii.gz"]
    (root / "dataset.json").write_text(json.dumps(payload))
    return root


def nnunet(root: Path) -> Path:
    touch(root / "imagesTr" / "case_a_0000.nii.gz")
    touch(root / "labelsTr" / "case_a.nii.gz")
    touch(root / "imagesTs" / "case_z_0000.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1}, "file_ending": ".nii.gz"}))
    return root


AMOS_LABELS = ["background", "spleen", "right kidney", "left kidney", "gall bladder", "esophagus", "liver", "stomach",
               "arota", "postcava", "pancreas", "right adrenal gland", "left adrenal gland", "duodenum", "bladder",
               "prostate/uterus"]  # amos22/dataset.json as published, its "arota" included


def amos(root: Path, listed=True) -> Path:
    """AMOS22 as published (amos22.zip): 4-digit case numbers, a validation set with labels, 16 labels."""
    for i in (1, 4):
        touch(root / "imagesTr" / f"amos_{i:04d}.nii.gz")
        touch(root / "labelsTr" / f"amos_{i:04d}.nii.gz")
    touch(root / "imagesVa" / "amos_0008.nii.gz")
    touch(root / "labelsVa" / "amos_0008.nii.gz")
    touch(root / "imagesTs" / "amos_0002.nii.gz")
    payload = {"labels": {str(i): name for i, name in enumerate(AMOS_LABELS)}, "modality": {"0": "CT"}}
    if listed:
        payload["training"] = [{"image": f"./imagesTr/amos_{i:04d}.nii.gz", "label": f"./labelsTr/amos_{i:04d}.nii.gz"}
                               for i in (1, 4)]
        payload["validation"] = [{"image": "./imagesVa/amos_0008.nii.gz", "label": "./labelsVa/amos_0008.nii.gz"}]
        payload["test"] = [{"image": "./imagesTs/amos_0002.nii.gz"}]
    (root / "dataset.json").write_text(json.dumps(payload))
    return root


def totalseg(root: Path) -> Path:
    touch(root / "s0000" / "ct.nii.gz")
    touch(root / "s0000" / "segmentations" / "liver.nii.gz")
    touch(root / "s0000" / "segmentations" / "spleen.nii.gz")
    touch(root / "s0001" / "ct.nii.gz")  # the flat form of TotalSegmentator's test files
    touch(root / "s0001" / "liver.nii.gz")
    (root / "meta.csv").write_text("image_id;split\ns0000;train\ns0001;test\n")
    return root


def btcv(root: Path) -> Path:
    """BTCV's RawData.zip as published (Synapse multi-atlas abdomen)."""
    touch(root / "RawData" / "Training" / "img" / "img0001.nii.gz")
    touch(root / "RawData" / "Training" / "label" / "label0001.nii.gz")
    touch(root / "RawData" / "Testing" / "img" / "img0061.nii.gz")
    return root


def flare(root: Path, prefix="FLARE22_Tr_") -> Path:
    """FLARE22's training set as published (FLARE22Train/)."""
    for i in (1, 2):
        touch(root / "images" / f"{prefix}{i:04d}_0000.nii.gz")
        touch(root / "labels" / f"{prefix}{i:04d}.nii.gz")
    return root


def summary(found) -> list[tuple[str, str, str | None, str | None]]:
    return [(c.case_id, c.split, c.volume.name, c.label.name if c.label else None) for c in found.cases]


# ----------------------------------------------------------------------------------------------------------
# Layouts


def test_each_layout_is_recognised(tmp_path):
    assert detect_layout(competition(tmp_path / "c")) == "competition"
    assert detect_layout(lits(tmp_path / "l")) == "lits"
    assert detect_layout(decathlon(tmp_path / "d")) == "decathlon"
    assert detect_layout(nnunet(tmp_path / "n")) == "nnunet"
    assert detect_layout(totalseg(tmp_path / "t")) == "totalseg"
    assert detect_layout(btcv(tmp_path / "b")) == "btcv"
    assert detect_layout(flare(tmp_path / "f")) == "flare"
    (tmp_path / "other").mkdir()
    touch(tmp_path / "other" / "scan.nii.gz")
    assert detect_layout(tmp_path / "other") is None


def test_unrecognised_folder_names_every_known_layout(tmp_path):
    touch(tmp_path / "scans" / "a.nii.gz")
    with pytest.raises(LiverctlError) as info:
        find_source(tmp_path / "scans")
    message = str(info.value)
    assert str(tmp_path / "scans") in message and "\n" not in message
    assert all(name in message for name in LAYOUTS) and "--layout" in message
    assert "(its folder" not in message and "unpack" not in message
    # a new user's usual slips: the folder above the data, a download not unpacked
    decathlon(tmp_path / "downloads" / "Task03_Liver")
    with pytest.raises(LiverctlError, match=f"knows \\(its folder Task03_Liver looks like the decathlon layout: give "
                                            f"{tmp_path / 'downloads' / 'Task03_Liver'} instead\\): "):
        find_source(tmp_path / "downloads")
    touch(tmp_path / "fresh" / "Task03_Liver.tar")
    with pytest.raises(LiverctlError, match="knows \\(it holds Task03_Liver.tar: unpack it and give the folder it makes\\)"):
        find_source(tmp_path / "fresh")


def test_files_that_are_not_nifti_are_named_not_dropped_silently(tmp_path):
    """A test volume in another format would be missing from the submission without a word."""
    competition(tmp_path / "c")
    for name in ("volume-10.mha", "volume-11.hdr", "volume-11.img", "volume-12.nrrd"):
        touch(tmp_path / "c" / "test" / name)
    found = find_source(tmp_path / "c")
    assert [c.case_id for c in found.by_split("test")] == ["9"]
    assert found.skipped == [
        f"{tmp_path / 'c' / 'test'}: 4 files that are not NIfTI (.nii, .nii.gz) left out: volume-10.mha, "
        "volume-11.hdr, volume-11.img, ..."
    ]
    touch(tmp_path / "d" / "labelsTr" / "liver_0.json")
    assert find_source(decathlon(tmp_path / "d", listed=False)).skipped == [  # the folders, not the lists
        f"{tmp_path / 'd' / 'labelsTr'}: 1 file that is not NIfTI (.nii, .nii.gz) left out: liver_0.json"
    ]
    assert find_source(competition(tmp_path / "e")).skipped == []


def test_folders_named_like_nifti_are_left_out_and_links_to_nowhere_kept_to_be_named(tmp_path):
    """A folder `x.nii.gz` is no case (it made nnU-Net's channel names look absent, so the folder read as the
    Decathlon's); a dangling link (a git-annex file not fetched) stays a case, so reading it names it."""
    root = nnunet(tmp_path / "n")
    (root / "imagesTr" / "unpacked.nii.gz").mkdir()
    (root / "imagesTr" / "case_b_0000.nii.gz").symlink_to("annexed/elsewhere")
    (root / "labelsTr" / "case_b.nii.gz").symlink_to("case_b.nii.gz")  # a loop
    found = find_source(root)
    assert found.layout == "nnunet" and not found.problems
    assert summary(found) == [
        ("case_a", "train", "case_a_0000.nii.gz", "case_a.nii.gz"),
        ("case_b", "train", "case_b_0000.nii.gz", "case_b.nii.gz"),
        ("case_z", "test", "case_z_0000.nii.gz", None),
    ]
    assert found.skipped == [
        f"{root / 'imagesTr'}: 1 file that is not NIfTI (.nii, .nii.gz) left out: unpacked.nii.gz (a folder)"
    ]
    ts = totalseg(tmp_path / "t")
    (ts / "s0002" / "segmentations").mkdir(parents=True)
    (ts / "s0002" / "ct.nii.gz").symlink_to("gone.nii.gz")
    (ts / "s0002" / "segmentations" / "liver.nii.gz").symlink_to("gone.nii.gz")
    assert [c.case_id for c in find_source(ts).cases] == ["s0000", "s0001", "s0002"]


def test_lits_pairs_by_number_across_batch_folders(tmp_path):
    found = find_source(lits(tmp_path))
    assert found.layout == "lits" and not found.problems
    assert summary(found) == [
        ("0", "train", "volume-0.nii", "segmentation-0.nii"),
        ("1", "train", "volume-1.nii", "segmentation-1.nii"),
        ("2", "train", "volume-2.nii", "segmentation-2.nii"),
        ("test-volume-0", "test", "test-volume-0.nii", None),
    ]
    assert found.label_names is None  # LiTS names no labels: --liver-labels is needed


def test_nifti_files_a_layout_does_not_take_are_named_not_dropped_silently(tmp_path):
    """LiTS took only volume-N / segmentation-N / test-volume-N and the Decathlon's lists only what they name:
    a renamed or extra NIfTI file (and in LiTS any other file) went unsaid; so did a TotalSegmentator folder
    whose CT is named otherwise. One note per folder; none for the layouts as published."""
    root = lits(tmp_path / "l")
    assert find_source(root).skipped == []
    touch(root / "Training Batch 1" / "volume_5.nii")
    touch(root / "Training Batch 1" / "liver-5.nii.gz")
    touch(root / "Training Batch 1" / "notes.txt")
    touch(root / "ct.nii.gz")
    (root / "old.nii").mkdir()  # a folder named like NIfTI: no batch folder
    touch(root / "old.nii" / "volume-9.nii")
    found = find_source(root)
    assert [c.case_id for c in found.cases] == ["0", "1", "2", "test-volume-0"] and not found.problems
    names = "volume-N, segmentation-N or test-volume-N (.nii, .nii.gz)"
    assert found.skipped == [
        f"{root}: 1 file that is not NIfTI (.nii, .nii.gz) left out: old.nii (a folder)",
        f"{root}: 1 file that is not named {names} left out: ct.nii.gz",
        f"{root / 'Training Batch 1'}: 1 file that is not NIfTI (.nii, .nii.gz) left out: notes.txt",
        f"{root / 'Training Batch 1'}: 2 files that are not named {names} left out: liver-5.nii.gz, volume_5.nii",
    ]
    root = decathlon(tmp_path / "d")
    assert find_source(root).skipped == []
    touch(root / "imagesTr" / "liver_2.nii.gz")
    touch(root / "labelsTr" / "liver_2.nii.gz")
    touch(root / "imagesTs" / "liver_6.nii.gz")
    touch(root / "labelsTr" / "liver_0.json")  # the lists name the cases: other files are nobody's business
    found = find_source(root)
    assert [c.case_id for c in found.cases] == ["liver_0", "liver_1", "liver_5"]
    assert found.skipped == [
        f"{root / 'imagesTr'}: 1 file that is not listed in dataset.json left out: liver_2.nii.gz",
        f"{root / 'labelsTr'}: 1 file that is not listed in dataset.json left out: liver_2.nii.gz",
        f"{root / 'imagesTs'}: 1 file that is not listed in dataset.json left out: liver_6.nii.gz",
    ]
    root = totalseg(tmp_path / "t")
    touch(root / "notes" / "readme.txt")  # a folder without NIfTI is no case and no note
    assert find_source(root).skipped == []
    touch(root / "s0002" / "CT.nii.gz")
    touch(root / "s0002" / "segmentations" / "liver.nii.gz")
    touch(root / "s0003" / "segmentations" / "liver.nii.gz")
    found = find_source(root)
    assert [c.case_id for c in found.cases] == ["s0000", "s0001"] and not found.problems
    assert found.skipped == [f"{root}: 2 folders that are without ct.nii.gz or ct.nii left out: s0002, s0003"]


def test_lits_segmentation_without_volume_is_a_problem(tmp_path):
    lits(tmp_path)
    lonely = touch(tmp_path / "Training Batch 2" / "segmentation-7.nii")
    found = find_source(tmp_path)
    assert [c.case_id for c in found.by_split("train")] == ["0", "1", "2"]
    assert any(str(lonely) in str(p) and "no volume" in str(p) for p in found.problems)


def test_decathlon_reads_dataset_json(tmp_path):
    found = find_source(decathlon(tmp_path))
    assert found.layout == "decathlon" and not found.problems
    assert summary(found) == [
        ("liver_0", "train", "liver_0.nii.gz", "liver_0.nii.gz"),
        ("liver_1", "train", "liver_1.nii.gz", "liver_1.nii.gz"),
        ("liver_5", "test", "liver_5.nii.gz", None),
    ]
    assert found.label_names == {0: "background", 1: "liver", 2: "cancer"}
    assert found.cases[0].known_labels == (0, 1, 2)
    payload = json.loads((tmp_path / "dataset.json").read_text())  # an entry listed twice was "also used by
    payload["training"].append(dict(payload["training"][0]))       # liver_0.nii.gz; rename one": itself
    payload["test"].append("imagesTs/liver_5.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps(payload))
    again = find_source(tmp_path)
    assert summary(again) == summary(found) and not again.problems


def test_decathlon_files_listed_but_missing_are_problems(tmp_path):
    decathlon(tmp_path)
    (tmp_path / "labelsTr" / "liver_1.nii.gz").unlink()
    found = find_source(tmp_path)
    assert [c.case_id for c in found.by_split("train")] == ["liver_0"]
    assert any("liver_1.nii.gz" in str(p) and "missing" in str(p) for p in found.problems)


def test_decathlon_entries_too_long_for_a_file_name_are_problems_of_one_short_line(tmp_path):
    """A listed name of 200,000 characters made pathlib's is_file raise 'OSError: File name too long' through
    find_source and `ingest --dry-run`, and an entry of that length that is no table was quoted whole in its
    problem line (scripts/fuzz_readers.py dataset)."""
    root = decathlon(tmp_path)
    payload = json.loads((root / "dataset.json").read_text())
    payload["training"][0]["image"] = "x" * 200_000
    payload["training"][1] = "y" * 200_000
    payload["test"] = [["z" * 200_000]]
    (root / "dataset.json").write_text(json.dumps(payload))
    found = find_source(root)
    lines = [str(p) for p in found.problems]
    where = root / "dataset.json"
    assert lines == [f"{where}: lists '{'x' * 78}…, not a file name (File name too long)",
                     f"{where}: has a training entry '{'y' * 78}… without \"image\" and \"label\"",
                     f"{where}: lists ['{'z' * 77}…, not a file name"], [line[:200] for line in lines]
    assert all(len(line) < 300 for line in lines)


def test_names_quoted_in_problem_lines_are_cut_alike_and_show_control_characters(tmp_path):
    """Values quoted in problem lines were cut by `!r:.80` with no "…" (a cut name read as a whole one) while
    the module's other cuts said so; printable.quoted now: repr (control characters as escapes), "…"."""
    root = decathlon(tmp_path)
    payload = json.loads((root / "dataset.json").read_text())
    payload["training"][1] = {"image": "a\x1b[2J\u202e" + "q" * 100}
    payload["labels"] = {"1": "liver", "2": "t" * 100 + "\n"}
    (root / "dataset.json").write_text(json.dumps(payload))
    found = find_source(root)
    assert [str(p).split(": ", 1)[1] for p in found.problems] == [
        "has a training entry {'image': 'a\\x1b[2J\\u202e" + "q" * 54 + "… without \"image\" and \"label\""]
    payload["labels"] = {"liver": 1, "t" * 100 + "\n": 2.5}
    (root / "dataset.json").write_text(json.dumps(payload))
    with pytest.raises(LiverctlError) as info:
        label_names(json.loads((root / "dataset.json").read_text()), root)
    assert str(info.value).endswith("""has a "labels" entry '""" + "t" * 38 + "…: 2.5 is not an integer")


def test_decathlon_without_lists_pairs_the_folders(tmp_path):
    found = find_source(decathlon(tmp_path, listed=False))
    assert [(c.case_id, c.split) for c in found.cases] == [
        ("liver_0", "train"),
        ("liver_1", "train"),
        ("liver_5", "test"),
    ]


def test_decathlon_lists_of_another_kind_are_said_not_passed_over(tmp_path):
    """`"training": "x"` in dataset.json was passed over without a word (the folders paired instead)."""
    root = decathlon(tmp_path, listed=False)
    payload = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**payload, "training": "see imagesTr", "test": {"n": 1}}))
    found = find_source(root)
    assert [(c.case_id, c.split) for c in found.cases] == [("liver_0", "train"), ("liver_1", "train"),
                                                           ("liver_5", "test")]
    assert [s for s in found.skipped if "dataset.json" in s] == [
        f'{root / "dataset.json"}: "training" is a text, not a list of cases: imagesTr/ and labelsTr/ paired by '
        "file name instead",
        f'{root / "dataset.json"}: "test" is an object, not a list of files: the test volumes taken from imagesTs/ '
        "instead",
    ]


def test_unreadable_dataset_json_names_the_file(tmp_path):
    decathlon(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(LiverctlError, match="cannot be read as JSON") as info:
        find_source(tmp_path)
    assert str(tmp_path / "dataset.json") in str(info.value)
    # Notepad's UTF-8 begins with a byte-order mark: it was "JSONDecodeError: Unexpected UTF-8 BOM"
    (tmp_path / "dataset.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"labels": {"1": "Leber (liver)"}}).encode())
    assert find_source(tmp_path).label_names == {1: "Leber (liver)"}


@pytest.mark.parametrize(("text", "why"), [("[" * 100_000 + "]" * 100_000, "nested too deep"),
                                           ('{"numTraining": ' + "9" * 5000 + "}", "a number of thousands of digits")])
def test_a_dataset_json_nested_too_deep_or_with_a_huge_number_is_one_line(tmp_path, text, why):
    """A RecursionError and a ValueError (int() of 5000 digits) went through find_source and `ingest --dry-run`
    as tracebacks (scripts/fuzz_readers.py dataset)."""
    for layout, make in (("decathlon", decathlon), ("nnunet", nnunet)):
        root = make(tmp_path / layout)
        (root / "dataset.json").write_text(text)
        with pytest.raises(LiverctlError) as info:
            find_source(root)
        assert str(info.value) == f"{root / 'dataset.json'}: cannot be read as JSON ({why})"


def test_fuzz_dataset_json_gives_a_plan_or_one_liverctl_error(tmp_path):
    """A Decathlon or nnU-Net dataset.json is anyone's file: scripts/fuzz_readers.py's JSON mutations (values of
    other types, NaN, huge numbers, deep nesting, long text, a key twice, bytes flipped, invalid UTF-8, control
    characters, truncated) read by find_source and plan_sources, and now and then `ingest --dry-run`. Nesting
    too deep and a number of 5000 digits were tracebacks."""
    import shutil
    from collections import Counter

    import numpy as np
    from fuzz_script import load_fuzz_script, outcome

    fuzz = load_fuzz_script()
    bases = fuzz.base_sources(tmp_path / "base")
    rng = np.random.default_rng(9)
    outcomes = Counter()
    for case in range(120):
        layout = ("decathlon", "nnunet")[case % 2]
        root = tmp_path / str(case) / layout
        shutil.copytree(bases[layout], root)
        data, what = fuzz.mutate_json_text(rng, (root / "dataset.json").read_text())
        (root / "dataset.json").write_bytes(data)
        for reader, read in fuzz.dataset_readers(root, tmp_path / str(case) / "liver.zarr", layout):
            if case % 10 == 0 or reader != "ingest --dry-run":
                outcomes[reader, outcome(read, f"case {case}: {layout} {what}: {reader}")] += 1
        shutil.rmtree(root.parent)
    assert outcomes["plan", "ok"] >= 20 and outcomes["plan", "refused"] >= 20, outcomes


def test_nnunet_channel_suffix(tmp_path):
    found = find_source(nnunet(tmp_path))
    assert found.layout == "nnunet" and not found.problems
    assert summary(found) == [
        ("case_a", "train", "case_a_0000.nii.gz", "case_a.nii.gz"),
        ("case_z", "test", "case_z_0000.nii.gz", None),
    ]
    assert found.label_names == {0: "background", 1: "liver"}
    stray = touch(tmp_path / "imagesTr" / "case_a.nii.gz")  # a label copied into imagesTr/
    found = find_source(tmp_path)  # was the Decathlon's layout: 'case_a_0000 has no label in labelsTr/', ...
    assert found.layout == "nnunet" and [c.case_id for c in found.cases] == ["case_a", "case_z"]
    assert [str(p) for p in found.problems] == [f"{stray}: has no channel suffix (expected NAME_0000.nii.gz)"]


def test_amos_case_numbers_are_no_nnunet_channels(tmp_path):
    """AMOS22's amos_0001.nii.gz read as nnU-Net's case 'amos', channel 0001: `ingest amos22/` refused every case
    ("case 'amos' has channels 0001, 0004; liverctl takes one-channel CT", "label of case 'amos_0001' has no
    volume"). No image is channel _0000 and dataset.json lists them by name: the Decathlon's layout."""
    assert detect_layout(amos(tmp_path / "listed")) == "decathlon"
    assert detect_layout(amos(tmp_path / "unlisted", listed=False)) == "decathlon"  # no _0000 anywhere
    touch(tmp_path / "zero" / "imagesTr" / "amos_0000.nii.gz")  # a case numbered 0: the list still says
    assert detect_layout(amos(tmp_path / "zero")) == "decathlon"
    found = find_source(tmp_path / "listed")
    assert [c.case_id for c in found.by_split("train")] == ["amos_0001", "amos_0004", "amos_0008"]
    assert not any("channel" in str(p) for p in found.problems)
    v1 = nnunet(tmp_path / "v1")  # nnU-Net v1's list names an image without its _0000: still nnU-Net's
    (v1 / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver"}, "training": [
        {"image": "./imagesTr/case_a.nii.gz", "label": "./labelsTr/case_a.nii.gz"}]}))
    assert detect_layout(v1) == "nnunet"


def test_a_validation_folder_its_dataset_json_does_not_list_is_said(tmp_path):
    """A dataset.json with a "training" list and no "validation" one (a copy of AMOS22 whose list was rewritten,
    a user's own conversion) beside labelled imagesVa/ + labelsVa/: those cases were left out without a word, as
    all of AMOS's were before a44bcec. They get the note any file its list does not name gets."""
    root = amos(tmp_path / "amos")
    payload = json.loads((root / "dataset.json").read_text())
    del payload["validation"]
    (root / "dataset.json").write_text(json.dumps(payload))
    found = find_source(root)
    assert [c.case_id for c in found.by_split("train")] == ["amos_0001", "amos_0004"]
    assert found.skipped == [
        f"{root / 'imagesVa'}: 1 file that is not listed in dataset.json left out: amos_0008.nii.gz",
        f"{root / 'labelsVa'}: 1 file that is not listed in dataset.json left out: amos_0008.nii.gz"]


def test_amos_validation_cases_are_training_cases_and_its_test_list_is_read(tmp_path):
    """AMOS22's labelled imagesVa/ + labelsVa/ were passed over without a word, and each entry of its test list,
    {"image": "./imagesTs/amos_0002.nii.gz"}, was a problem ("lists {...}, not a file name") and its file 'not
    listed'. Now the validation cases are training cases (labelled data, from the list or the folders) and the
    test list is read."""
    for root in (amos(tmp_path / "listed"), amos(tmp_path / "unlisted", listed=False)):
        found = find_source(root)
        assert summary(found) == [
            ("amos_0001", "train", "amos_0001.nii.gz", "amos_0001.nii.gz"),
            ("amos_0002", "test", "amos_0002.nii.gz", None),
            ("amos_0004", "train", "amos_0004.nii.gz", "amos_0004.nii.gz"),
            ("amos_0008", "train", "amos_0008.nii.gz", "amos_0008.nii.gz"),
        ], root
        assert not found.problems and not found.skipped
        assert found.cases[-1].label == root / "labelsVa" / "amos_0008.nii.gz"
    touch(tmp_path / "listed" / "imagesVa" / "amos_0013.nii.gz")  # in the folder, not in the list: said
    assert find_source(tmp_path / "listed").skipped == [
        f"{tmp_path / 'listed' / 'imagesVa'}: 1 file that is not listed in dataset.json left out: amos_0013.nii.gz"]
    touch(tmp_path / "unlisted" / "labelsVa" / "amos_0013.nii.gz")
    assert [str(p) for p in find_source(tmp_path / "unlisted").problems] == [
        f"{tmp_path / 'unlisted' / 'labelsVa' / 'amos_0013.nii.gz'}: label of case 'amos_0013' has no volume in "
        "imagesTr/ or imagesVa/"]
    plan = plan_sources([tmp_path / "listed"], tmp_path / "s.zarr")
    plan.check()
    assert [(s.liver_labels, s.labels_from) for s in plan.sources] == [((6,), "dataset.json")]


def test_amos_mri_cases_are_left_out_of_a_ct_store(tmp_path):
    """AMOS22 holds 100 MRI scans (ids above 500): `ingest amos22/` took them as CT, each with at most a note that
    read an MRI's 0..1500 as 'a CT whose rescale intercept (-1024) was lost? ... set scl_inter = -1024', and trained
    a CT model on MRI. They are left out now, with one note: by AMOS's numbering (nnU-Net's AMOS task-1 conversion),
    or by the scanner labeled_data_meta_0000_0599.csv names for each case where it is beside the data."""
    root = amos(tmp_path / "amos22")
    payload = json.loads((root / "dataset.json").read_text())
    for i, (folder, key) in {507: ("Tr", "training"), 508: ("Tr", "training"), 518: ("Va", "validation")}.items():
        touch(root / f"images{folder}" / f"amos_{i:04d}.nii.gz")
        touch(root / f"labels{folder}" / f"amos_{i:04d}.nii.gz")
        payload[key].append({"image": f"./images{folder}/amos_{i:04d}.nii.gz",
                             "label": f"./labels{folder}/amos_{i:04d}.nii.gz"})
    touch(root / "imagesTs" / "amos_0541.nii.gz")
    payload["test"].append({"image": "./imagesTs/amos_0541.nii.gz"})
    (root / "dataset.json").write_text(json.dumps(payload))
    found = find_source(root)
    assert [c.case_id for c in found.cases] == ["amos_0001", "amos_0002", "amos_0004", "amos_0008"]
    assert not found.problems
    assert found.skipped == [f"{root}: 4 cases that are AMOS's MRI scans (by AMOS's numbering, ids above 500; "
                             "labeled_data_meta_0000_0599.csv beside the data would name each case's scanner), not CT "
                             "left out: amos_0507, amos_0508, amos_0518, ..."]
    # the published CSV, one folder up (amos22.zip and it side by side): its scanners decide, the numbering only
    # for a case it does not place
    (tmp_path / "labeled_data_meta_0000_0599.csv").write_text(
        "amos_id,Patient's Sex,Manufacturer's Model Name,Manufacturer\n"
        "1,F,Aquilion ONE,TOSHIBA\n4,M,Prisma,SIEMENS\n507,M,Ingenia,Philips\n508,F,SIGNA HDe,GE\n"
        "518,M,Optima CT660,GE\n")
    found = find_source(root)
    assert [c.case_id for c in found.cases] == ["amos_0001", "amos_0002", "amos_0008", "amos_0518"]
    assert found.skipped == [f"{root}: 4 cases that are AMOS's MRI scans (by their scanner in "
                             "labeled_data_meta_0000_0599.csv), not CT left out: amos_0004, amos_0507, amos_0508, ..."]
    (tmp_path / "labeled_data_meta_0000_0599.csv").write_text("id,scanner\n1,CT\n")  # not AMOS's columns: said
    assert find_source(root).skipped[0] == (f"{tmp_path / 'labeled_data_meta_0000_0599.csv'}: has no 'amos_id' and "
                                            "\"Manufacturer's Model Name\" columns: AMOS's MRI cases are told by AMOS's "
                                            "numbering instead")
    mri_only = touch(tmp_path / "mr" / "Dataset702_AbdomenMR" / "imagesTr" / "amos_0507_0000.nii.gz").parent.parent
    touch(mri_only / "labelsTr" / "amos_0507.nii.gz")  # AMOS's MRI converted for nnU-Net: nothing to ingest, said
    with pytest.raises(LiverctlError, match=r"no case to ingest in the nnunet .*: .*1 case that is AMOS's MRI"):
        find_source(mri_only)


def test_nnunet_case_with_two_channels_is_a_problem(tmp_path):
    nnunet(tmp_path)
    touch(tmp_path / "imagesTr" / "case_a_0001.nii.gz")
    touch(tmp_path / "imagesTr" / "case_b.nii.gz")  # no channel suffix
    touch(tmp_path / "labelsTr" / "case_b.nii.gz")
    found = find_source(tmp_path, layout="nnunet")  # recognised as the Decathlon's, with a file unsuffixed
    assert found.by_split("train") == []
    # one line each: not also "label of case 'case_a' has no volume"
    assert [str(p).split(": ", 1)[1] for p in found.problems] == [
        "has no channel suffix (expected NAME_0000.nii.gz)",
        "case 'case_a' has channels 0000, 0001; liverctl takes one-channel CT (_0000 only)",
    ]


def test_a_case_id_used_twice_is_one_problem(tmp_path):
    competition(tmp_path, ids=(1, 2))
    touch(tmp_path / "train" / "volume" / "1.nii")  # volume-1.nii.gz and 1.nii: both id '1'
    found = find_source(tmp_path)
    assert [c.case_id for c in found.by_split("train")] == ["2"]
    assert [str(p).split(": ", 1)[1] for p in found.problems] == [
        "case id '1' is also used by volume-1.nii.gz; rename one"
    ]


def test_totalseg_case_folders(tmp_path):
    totalseg(tmp_path)
    touch(tmp_path / "s0002" / "ct.nii.gz")  # no liver mask
    touch(tmp_path / "s0003" / "ct.nii")
    touch(tmp_path / "s0003" / "liver.nii")
    touch(tmp_path / "s0003" / "segmentations" / "liver.nii.gz")  # two masks: which one?
    touch(tmp_path / "notes" / "readme.txt")  # a folder without a CT is not a case
    found = find_source(tmp_path)
    assert found.layout == "totalseg"
    assert summary(found) == [
        ("s0000", "train", "ct.nii.gz", "liver.nii.gz"),
        ("s0001", "train", "ct.nii.gz", "liver.nii.gz"),
    ]
    assert found.cases[0].label == tmp_path / "s0000" / "segmentations" / "liver.nii.gz"
    assert found.cases[0].known_labels == (0, 1)
    assert [str(p) for p in found.problems] == [
        f"{tmp_path / 's0002' / 'ct.nii.gz'}: has no liver mask (segmentations/liver.nii.gz or liver.nii.gz) "
        "beside it",
        f"{tmp_path / 's0003'}: has two liver masks, segmentations/liver.nii.gz and liver.nii; keep one",
    ]


def test_btcv_as_published(tmp_path):
    """BTCV's RawData/ was no layout liverctl knew; given as RawData/ or the folder above, it is one now, and its
    layout names BTCV's labels (no file in the dataset does): liver is 6, the plan needs no --liver-labels."""
    root = btcv(tmp_path / "Abdomen")
    for given in (root, root / "RawData"):
        found = find_source(given)
        assert found.layout == "btcv" and not found.problems and not found.skipped
        assert summary(found) == [("img0001", "train", "img0001.nii.gz", "label0001.nii.gz"),
                                  ("img0061", "test", "img0061.nii.gz", None)]
        assert found.cases[0].known_labels == tuple(range(14))
    touch(root / "RawData" / "Training" / "label" / "label0002.nii.gz")
    assert [str(p) for p in find_source(root).problems] == [
        f"{root / 'RawData' / 'Training' / 'label' / 'label0002.nii.gz'}: label of case 'img0002' has no volume in "
        "Training/img/"]
    plan = plan_sources([competition(tmp_path / "c"), root], tmp_path / "s.zarr")
    plan.check()
    assert [(s.liver_labels, s.labels_from) for s in plan.sources][1] == ((6,), "BTCV's label list")


def test_btcv_as_monai_converts_it(tmp_path):
    """BTCV as MONAI's UNETR / Swin UNETR tutorials convert it (imagesTr/img0001.nii.gz, labelsTr/label0001.nii.gz,
    dataset_0.json) read as the Decathlon's layout without dataset.json: every case 'training volume of case
    'img0001' has no label in labelsTr/' and 'label of case 'label0001' has no volume', and the plan 'nothing names its
    label values'. Its dataset_0.json is read as dataset.json (liver 6 from its names, its validation list training
    cases too); without it, one problem says what to do."""
    root = tmp_path / "BTCV"
    for i in (1, 2, 35):
        touch(root / "imagesTr" / f"img{i:04d}.nii.gz")
        touch(root / "labelsTr" / f"label{i:04d}.nii.gz")
    touch(root / "imagesTs" / "img0061.nii.gz")
    names = ["background", "spleen", "rkid", "lkid", "gall", "eso", "liver", "sto", "aorta", "IVC", "veins",
             "pancreas", "rad", "lad"]  # MONAI's dataset_0.json, as its tutorials ship it

    def entry(i: int) -> dict[str, str]:
        return {"image": f"imagesTr/img{i:04d}.nii.gz", "label": f"labelsTr/label{i:04d}.nii.gz"}

    (root / "dataset_0.json").write_text(json.dumps({
        "labels": dict(enumerate(names)), "training": [entry(1), entry(2)], "validation": [entry(35)],
        "test": ["imagesTs/img0061.nii.gz"]}))
    found = find_source(root)
    assert found.layout == "decathlon" and not found.problems and not found.skipped
    assert summary(found) == [("img0001", "train", "img0001.nii.gz", "label0001.nii.gz"),
                              ("img0002", "train", "img0002.nii.gz", "label0002.nii.gz"),
                              ("img0035", "train", "img0035.nii.gz", "label0035.nii.gz"),
                              ("img0061", "test", "img0061.nii.gz", None)]
    assert found.cases[0].known_labels == tuple(range(14)) and found.labels_named_by == "dataset_0.json"
    plan = plan_sources([competition(tmp_path / "c"), root], tmp_path / "s.zarr")
    plan.check()
    assert [(s.liver_labels, s.labels_from) for s in plan.sources][1] == ((6,), "dataset_0.json")
    touch(root / "imagesTr" / "img0040.nii.gz")  # not in its list: said with the list's own name
    assert find_source(root).skipped == [
        f"{root / 'imagesTr'}: 1 file that is not listed in dataset_0.json left out: img0040.nii.gz"]
    (root / "dataset_0.json").unlink()
    with pytest.raises(LiverctlError) as refused:
        find_source(root)
    assert str(refused.value) == (
        f"{root}: imagesTr/ holds img0001.nii.gz and labelsTr/ label0001.nii.gz: BTCV as MONAI's tutorials convert "
        "it, whose dataset_0.json pairs them and names its labels (liver 6); put that dataset_0.json beside them, or "
        "give BTCV's RawData/ folder as published")


def test_flare22_as_published(tmp_path):
    """FLARE22Train/images/FLARE22_Tr_0001_0000.nii.gz + labels/FLARE22_Tr_0001.nii.gz was no layout liverctl knew.
    Now it is one, naming FLARE22's 13 labels (liver 1 and nothing else); another FLARE year's files (FLARE23: label
    14 a tumour in any organ) are named by nothing, and the plan asks for --liver-labels, never 'any value > 0'."""
    found = find_source(flare(tmp_path / "FLARE22Train"))
    assert found.layout == "flare" and not found.problems and not found.skipped
    assert summary(found) == [("FLARE22_Tr_0001", "train", "FLARE22_Tr_0001_0000.nii.gz", "FLARE22_Tr_0001.nii.gz"),
                              ("FLARE22_Tr_0002", "train", "FLARE22_Tr_0002_0000.nii.gz", "FLARE22_Tr_0002.nii.gz")]
    assert found.cases[0].known_labels == tuple(range(14))
    plan = plan_sources([competition(tmp_path / "c"), tmp_path / "FLARE22Train"], tmp_path / "s.zarr")
    plan.check()
    assert [(s.liver_labels, s.labels_from) for s in plan.sources][1] == ((1,), "FLARE22's label list")
    found = find_source(flare(tmp_path / "FLARE23", prefix="FLARE23_"))
    assert found.layout == "flare" and found.label_names is None and found.cases[0].known_labels is None
    plan = plan_sources([competition(tmp_path / "c"), tmp_path / "FLARE23"], tmp_path / "s.zarr")
    with pytest.raises(LiverctlError, match=r"flare \(.*\): nothing names its label values.*--liver-labels flare="):
        plan.check()



def test_each_layouts_request_for_liver_labels_carries_its_own_hint(tmp_path):
    """A FLARE23 folder (named by nothing) was refused with 'give --liver-labels flare=VALUES (LiTS: 1,2 = liver and
    tumour)': LiTS's values, for FLARE, whose liver is 1 and whose 14 is a tumour in any organ. Each layout's refusal
    now ends with its own hint, kept in its module."""
    nameless_decathlon, nameless_nnunet = decathlon(tmp_path / "d"), nnunet(tmp_path / "n")
    (nameless_decathlon / "dataset.json").unlink()
    (nameless_nnunet / "dataset.json").unlink()
    for root, hint in (
        (lits(tmp_path / "l"), "(LiTS: 1,2 = liver and tumour)"),
        (flare(tmp_path / "FLARE23", prefix="FLARE23_"),
         "(FLARE21, 22 and 23: 1 = liver; FLARE23's 14 is a tumour in any organ, not only the liver's)"),
        (nameless_decathlon, "(the task's dataset.json names them; Task03_Liver: 1,2 = liver and cancer)"),
        (nameless_nnunet, '(the dataset\'s dataset.json "labels" names them)'),
    ):
        plan = plan_sources([competition(tmp_path / "c"), root], tmp_path / "s.zarr")
        assert plan.sources[1].error.endswith(f"give --liver-labels {plan.sources[1].name}=VALUES {hint}"), root

def test_layout_can_be_forced(tmp_path):
    decathlon(tmp_path)  # a Decathlon folder read as nnU-Net: no _0000 suffixes
    found = find_source(tmp_path, layout="nnunet")
    assert found.layout == "nnunet" and found.by_split("train") == []
    assert any("no channel suffix" in str(p) for p in found.problems)
    with pytest.raises(LiverctlError, match="unknown layout 'kaggle'"):
        find_source(tmp_path, layout="kaggle")


# ----------------------------------------------------------------------------------------------------------
# Label names


@pytest.mark.parametrize(
    ("labels", "names", "liver"),
    [
        ({"0": "background", "1": "liver", "2": "cancer"}, {0: "background", 1: "liver", 2: "cancer"}, (1, 2)),
        ({"background": 0, "liver": 1}, {0: "background", 1: "liver"}, (1,)),
        ({"background": 0, "liver": [1, 2], "tumor": 2}, {0: "background", 1: "liver", 2: "liver + tumor"}, (1, 2)),
        # another organ's tumour is not liver; nor is a tumour where other organs are labelled
        ({"0": "background", "1": "kidney", "2": "kidney tumor", "3": "liver"}, None, (3,)),
        ({"0": "background", "1": "spleen", "2": "tumour"}, None, ()),
    ],
)
def test_label_names_and_liver_values(tmp_path, labels, names, liver):
    parsed = label_names({"labels": labels}, tmp_path)
    if names is not None:
        assert parsed == names
    assert liver_values(parsed) == liver


def test_label_names_of_another_shape_are_an_error(tmp_path):
    with pytest.raises(LiverctlError, match="neither"):
        label_names({"labels": ["background", "liver"]}, tmp_path)
    with pytest.raises(LiverctlError, match="neither"):  # was "ValueError: invalid literal for int()", a traceback
        label_names({"labels": {"0": "background", "²": "liver"}}, tmp_path)
    assert label_names({"labels": {" 1 ": "liver", "2": "outside"}}, tmp_path) == {1: "liver", 2: "outside"}


@pytest.mark.parametrize(("labels", "words"), [
    ({"0": "background", "-1": "outside"}, "'outside': no label map holds -1; label values are whole numbers from 0"),
    ({"background": 0, "liver": 2**64}, f"'liver': no label map holds {2**64};"),
    ({"background": 0, "liver": [1, -2]}, "'liver': no label map holds -2;"),
    ({"background": 0, "liver": 1.5}, "'liver': 1.5 is not an integer"),
    ({"background": 0, "liver": 1.0}, "'liver': 1.0 is not an integer"),
    ({"background": 0, "liver": True}, "'liver': True is not an integer"),
])
def test_label_values_no_label_map_holds_are_refused(tmp_path, labels, words):
    """dataset.json's values were not held to --liver-labels' rule: {"-1": "liver"} planned liver label -1 (every
    case went in without liver), 2^64 one no label type holds; a float or a bool was 'neither {"1": "liver"} nor
    {"liver": 1}', which it is. Now one line each, the rule's words, naming the file."""
    with pytest.raises(LiverctlError) as info:
        label_names({"labels": labels}, tmp_path)
    assert str(info.value).startswith(f'{tmp_path / "dataset.json"}: has a "labels" entry {words}'), str(info.value)


def test_dataset_json_naming_0_liver_is_refused(tmp_path):
    """{"0": "liver"} (a background named so by a careless converter, or labels shifted by one) was left out of the
    liver values; with {"1": "liver"} beside it the source planned as if 0 were not named at all. 0 as liver is
    refused whoever names it (`check_liver_labels`), so the plan says so for that source."""
    labels = {"0": "liver", "1": "liver tumour"}
    assert 0 in liver_values(label_names({"labels": labels}, tmp_path))
    plan = plan_sources([competition(tmp_path / "c"), decathlon(tmp_path / "d", labels=labels)], tmp_path / "s.zarr")
    with pytest.raises(LiverctlError, match=r"^decathlon \(.*\): dataset.json names 0,1 as liver: 0 is the "
                                            "background of a label map"):
        plan.check()


# ----------------------------------------------------------------------------------------------------------
# Plan


def test_plan_names_roles_prefixes_and_liver_labels(tmp_path):
    comp, lit, dec, nn = (
        competition(tmp_path / "comp", ids=(0, 1, 2)),
        lits(tmp_path / "lits"),
        decathlon(tmp_path / "msd"),
        nnunet(tmp_path / "nn"),
    )
    ts = totalseg(tmp_path / "ts")
    plan = plan_sources([comp, lit, dec, nn, ts], tmp_path / "s.zarr", liver_labels={"lits": [1, 2]})
    plan.check()
    by_name = {s.name: s for s in plan.sources}
    assert list(by_name) == ["competition", "lits", "decathlon", "nnunet", "totalseg"]
    assert [(s.role, s.in_folds) for s in plan.sources] == [(MAIN, True)] + [(EXTRA, False)] * 4
    # The main source keeps its ids (they are the submission's); LiTS ids 0-2 clash with them.
    assert [c.case_id for c in by_name["competition"].cases] == ["0", "1", "2", "9"]
    assert [c.case_id for c in by_name["lits"].cases] == ["lits-0", "lits-1", "lits-2"]
    assert [c.case_id for c in by_name["decathlon"].cases] == ["liver_0", "liver_1"]  # no clash, no prefix
    # Extra sources give training cases only.
    assert all(c.split == "train" for s in plan.sources[1:] for c in s.cases)
    assert "1 test volume left out: an extra source gives training cases only" in by_name["decathlon"].skipped
    assert [(s.liver_labels, s.labels_from) for s in plan.sources] == [
        (None, "the competition layout's default"),
        ((1, 2), "--liver-labels lits=1,2"),  # it said "(from --liver-labels lits=)"
        ((1, 2), "dataset.json"),
        ((1,), "dataset.json"),
        ((1,), "TotalSegmentator's liver.nii.gz"),
    ]
    assert by_name["lits"].cases[0].known_labels is None  # given labels: nothing else to check against
    assert by_name["decathlon"].cases[0].known_labels == (0, 1, 2)
    assert not (tmp_path / "s.zarr").exists()  # planning writes nothing


def test_plan_refuses_to_guess_lits_labels(tmp_path):
    plan = plan_sources([competition(tmp_path / "c"), lits(tmp_path / "l")], tmp_path / "s.zarr")
    with pytest.raises(LiverctlError, match=r"lits \(.*\): nothing names its label values.*--liver-labels lits="):
        plan.check()
    # an unnamed --liver-labels applies to every source without dataset.json
    plan = plan_sources([competition(tmp_path / "c"), lits(tmp_path / "l")], tmp_path / "s.zarr", liver_labels=[1, 2])
    plan.check()
    assert [s.liver_labels for s in plan.sources] == [(1, 2), (1, 2)]


def test_plan_dataset_json_without_liver_is_an_error(tmp_path):
    plan = plan_sources(
        [competition(tmp_path / "c"), decathlon(tmp_path / "d", labels={"0": "background", "1": "spleen"})],
        tmp_path / "s.zarr",
    )
    with pytest.raises(LiverctlError, match="names no liver label"):
        plan.check()


def test_a_dataset_json_naming_no_liver_shows_its_names_in_one_short_line(tmp_path):
    """A label name of 200,000 characters was quoted whole in 'dataset.json names no liver label (...)', and one
    holding a NUL and a right-to-left mark as it was (scripts/fuzz_readers.py dataset, seed 0 case 486)."""
    root = decathlon(tmp_path / "d", labels={"0": "background", "1": "x" * 200_000, "2": "\u202e\x00spleen"})
    plan = plan_sources([root], tmp_path / "s.zarr")
    with pytest.raises(LiverctlError) as info:
        plan.check()
    message = str(info.value)
    assert "dataset.json names no liver label (0=background, 1=xxx" in message and "…" in message
    assert len(message) < 600 and "\x00" not in message and "\u202e" not in message


def test_plan_named_sources_and_extra_in_folds(tmp_path):
    plan = plan_sources(
        [f"comp={competition(tmp_path / 'c')}", f"batch_a={lits(tmp_path / 'a')}", f"batch_b={lits(tmp_path / 'b')}"],
        tmp_path / "s.zarr",
        liver_labels={"batch_a": [1, 2], "batch_b": [1]},
        extra_in_folds=True,
    )
    plan.check()
    assert [(s.name, s.role, s.in_folds) for s in plan.sources] == [
        ("comp", MAIN, True),
        ("batch_a", EXTRA, True),
        ("batch_b", EXTRA, True),
    ]
    ids = [c.case_id for s in plan.sources for c in s.cases]
    assert len(ids) == len(set(ids))  # two LiTS batches with the same numbers: both prefixed
    assert [c.case_id for c in plan.sources[2].cases] == ["batch_b-0", "batch_b-1", "batch_b-2"]


def test_plan_default_names_are_unique(tmp_path):
    plan = plan_sources(
        [competition(tmp_path / "c"), lits(tmp_path / "a"), lits(tmp_path / "b")],
        tmp_path / "s.zarr",
        liver_labels=[1, 2],
    )
    assert [s.name for s in plan.sources] == ["competition", "lits", "lits2"]


def test_plan_refuses_a_source_given_twice(tmp_path):
    comp = competition(tmp_path / "c")
    with pytest.raises(LiverctlError, match="given twice"):
        plan_sources([comp, Path(str(comp) + "/")], tmp_path / "s.zarr")


def test_options(tmp_path):
    assert parse_liver_labels_option(["1,2", "lits=1,2", "msd=1"]) == {None: [1, 2], "lits": [1, 2], "msd": [1]}
    assert parse_liver_labels_option(None) is None
    for bad in (["liver"], ["lits=liver"], ["Bad Name=1"], ["1", "2"], ["lits="]):
        with pytest.raises(LiverctlError, match="--liver-labels"):
            parse_liver_labels_option(bad)
    # values no label map holds: the cases went in without liver (a note each), as if unlabelled
    for bad, value in ((["-1"], "-1"), (["lits=1,-2"], "-2"), (["1,99999999999999999999"], "99999999999999999999")):
        with pytest.raises(LiverctlError, match=f"^--liver-labels {bad[0]}: no label map holds {value}; label values"):
            parse_liver_labels_option(bad)
    # the background as liver: every voxel outside the labelled structures went in as liver, exit 0
    for bad in (["0"], ["lits=1,0"]):
        with pytest.raises(LiverctlError, match=f"^--liver-labels {bad[0]}: 0 is the background of a label map"):
            parse_liver_labels_option(bad)


def test_liver_labels_given_through_the_api_are_held_to_the_same_rule(tmp_path):
    """`ingest_sources(liver_labels=[0])` (or {"lits": [-1]}) went past the option's check into the store."""
    comp, lit = competition(tmp_path / "c"), lits(tmp_path / "l")
    for labels, words in (([0], "--liver-labels 0: 0 is the background"),
                          ({"lits": [1, -1]}, "--liver-labels lits=1,-1: no label map holds -1")):
        with pytest.raises(LiverctlError, match=f"^{words}"):
            plan_sources([comp, lit], tmp_path / "s.zarr", liver_labels=labels)
    assert parse_layout_option(["lits", "msd=decathlon"]) == {None: "lits", "msd": "decathlon"}
    with pytest.raises(LiverctlError, match="unknown layout 'kaggle'"):
        parse_layout_option(["kaggle"])


def test_case_ids_that_differ_only_in_letter_case_are_refused(tmp_path):
    """`case_A` and `case_a` were two store folders on Linux and one on macOS's (or Windows') default file
    system: one case's chunks written over the other's. The second is refused, naming its file."""
    root = nnunet(tmp_path / "n")
    touch(root / "imagesTr" / "case_A_0000.nii.gz")
    touch(root / "labelsTr" / "case_A.nii.gz")
    plan = plan_sources([root], tmp_path / "s.zarr")
    (source,) = plan.sources
    assert [c.case_id for c in source.cases] == ["case_A", "case_z"]
    (problem,) = [p for p in source.problems if "letter case" in p]
    assert problem == (f"{root / 'imagesTr' / 'case_a_0000.nii.gz'}: case id 'case_a' differs from case 'case_A' only "
                       "in letter case: on a case-insensitive file system (macOS, Windows) their store folders would "
                       "be one; rename one")


def test_a_store_record_of_liver_labels_no_label_map_holds_is_not_kept(tmp_path):
    """A store an older liverctl made with --liver-labels 0 (or -1) records them for its source, and a rerun without
    --liver-labels kept them ('from the store: as ingested before'): the background stayed liver. Such a record is
    one that cannot be used (a store is anyone's file), so the labels are asked for again; a good one is kept."""
    lit = lits(tmp_path / "l")
    store = tmp_path / "s.zarr"
    store.mkdir()
    for recorded, kept in (([0], None), ([1, -1], None), ([2, 1], (1, 2))):
        record = {"name": "lits", "layout": "lits", "path": str(lit), "role": "main", "liver_labels": recorded}
        (store / "zarr.json").write_text(json.dumps(
            {"zarr_format": 3, "node_type": "group", "attributes": {"sources": [record]}}))
        plan = plan_sources([lit], store)
        assert plan.sources[0].liver_labels == kept
        if kept is None:
            with pytest.raises(LiverctlError, match=r"nothing names its label values.*--liver-labels lits="):
                plan.check()


def test_lits_as_its_copies_are_unpacked(tmp_path):
    """LiTS was looked for in the folder and its batch folders only, so the usual copies were 'not recognised':
    the challenge's zips unpack to media/nas/01_Datasets/CT/LITS/Training Batch N/, Kaggle's liver-tumor-segmentation
    to archive/volume_pt1..5 + segmentations/ with its part 2 (volume_pt6..) in 'archive (1)/' beside it, and a zip
    unpacked into a folder of its own name to LITS17/LITS17/. Each now pairs every case; a wrapper folder (no NIfTI,
    one folder) costs no level, macOS's __MACOSX is no folder of cases."""
    def expect(root, train, test=(), skipped=()):
        found = find_source(root)
        assert found.layout == "lits" and not found.problems and found.skipped == list(skipped), found.skipped
        assert [c.case_id for c in found.by_split("train")] == train
        assert [c.case_id for c in found.by_split("test")] == list(test)

    zips = tmp_path / "challenge"  # each zip unpacked into a folder of its own
    for n, ids in ((1, (0, 1)), (2, (28,))):
        batch = zips / f"Training_Batch{n}" / "media" / "nas" / "01_Datasets" / "CT" / "LITS" / f"Training Batch {n}"
        for i in ids:
            touch(batch / f"volume-{i}.nii")
            touch(batch / f"segmentation-{i}.nii")
    touch(zips / "Training_Batch1.zip")  # kept beside what it unpacked to: said, as any other file
    touch(zips / "LITS-Challenge-Test-Data" / "test-volume-0.nii")
    expect(zips, ["0", "1", "28"], ["test-volume-0"],
           [f"{zips}: 1 file that is not NIfTI (.nii, .nii.gz) left out: Training_Batch1.zip"])
    both = tmp_path / "both" / "media" / "nas" / "01_Datasets" / "CT" / "LITS"  # both zips into one folder
    for batch, i in (("Training Batch 1", 0), ("Training Batch 2", 28)):
        touch(both / batch / f"volume-{i}.nii")
        touch(both / batch / f"segmentation-{i}.nii")
    expect(tmp_path / "both", ["0", "28"])

    kaggle = tmp_path / "kaggle"
    for part, i in (("archive/volume_pt1", 0), ("archive/volume_pt5", 99), ("archive (1)/volume_pt6", 120)):
        touch(kaggle / part / f"volume-{i}.nii")
        touch(kaggle / "archive" / "segmentations" / f"segmentation-{i}.nii")
    (kaggle / "__MACOSX" / "archive").mkdir(parents=True)
    expect(kaggle, ["0", "120", "99"])

    nested = tmp_path / "LITS17"
    touch(nested / "LITS17" / "volume-3.nii")
    touch(nested / "LITS17" / "segmentation-3.nii")
    expect(nested, ["3"])
    touch(nested / "LITS17" / "Training Batch 1" / "volume-4.nii")
    touch(nested / "LITS17" / "Training Batch 1" / "segmentation-4.nii")
    expect(nested, ["3", "4"])


def test_lits_folders_deeper_than_it_looks_are_named(tmp_path):
    """Below the batch folders nothing is looked into (a home folder given by mistake is not walked whole); a LiTS
    file lying there was left out without a word. A note names the folders not looked into: three levels down, and
    below a batch folder (one holding NIfTI files) already at the second."""
    root = lits(tmp_path / "l")
    touch(root / "extra" / "x" / "deep" / "volume-9.nii")  # extra, x: two levels; deep: the third
    touch(root / "extra" / "x" / "deeper" / "segmentation-9.nii")
    touch(root / "extra" / "y" / "readme.txt")
    touch(root / "Training Batch 1" / "backup" / "volume-0.nii")
    found = find_source(root)
    assert [c.case_id for c in found.cases] == ["0", "1", "2", "test-volume-0"] and not found.problems
    assert found.skipped == [
        f"{root / 'Training Batch 1'}: 1 folder below LiTS's batch folders not looked into, any LiTS file in it left "
        "out: backup",
        f"{root / 'extra' / 'x'}: 2 folders below LiTS's batch folders not looked into, any LiTS file in them left "
        "out: deep, deeper",
        f"{root / 'extra' / 'y'}: 1 file that is not NIfTI (.nii, .nii.gz) left out: readme.txt",
    ]


def test_lits_stops_looking_after_so_many_folders_and_says_where(tmp_path, monkeypatch):
    """A folder given by mistake (a home folder) is not walked whole: after `_MAX_FOLDERS` folders the rest is left
    out, in a note naming where it stopped."""
    import liverctl.data.sources.lits as lits_layout

    root = lits(tmp_path / "l")
    monkeypatch.setattr(lits_layout, "_MAX_FOLDERS", 3)  # the folder, Test Batch, Training Batch 1
    found = lits_layout.find(root)
    assert [c.case_id for c in found.cases] == ["0", "1", "test-volume-0"] and not found.problems  # no 2
    assert found.skipped == [f"{root}: not looked into beyond its first 3 folders: {root / 'Training Batch 2'} and "
                             "the folders after it left out; give the folder that holds the LiTS files"]


def test_a_data_folder_linked_to_nowhere_is_said_so(tmp_path):
    """`ingest data` where data -> /mnt/datasets/lits and the disk is not mounted said 'no such folder'."""
    (tmp_path / "data").symlink_to(tmp_path / "datasets" / "lits")
    with pytest.raises(LiverctlError, match=r"data: is a link to .*datasets/lits', which does not exist \(a disk or "
                                            r"volume not mounted\?\); mount it, or choose another data folder$"):
        find_source(tmp_path / "data")

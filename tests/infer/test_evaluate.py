import hashlib
import json
import os

import nibabel as nib
import numpy as np
import pytest
from file_reads import count_reads

from liverctl.errors import LiverctlError
from liverctl.infer.evaluate import evaluate_submission, find_label_files, scores_path, write_scores
from liverctl.infer.submission import MalformedSubmission, write_submission


def _save(path, data):
    nib.save(nib.Nifti1Image(data.astype(np.uint8), np.eye(4)), str(path))


@pytest.fixture
def scored_pair(tmp_path):
    """Two cases with hand-computed Dice figures.

    case a (4x4x2): slice 0 label {(0,0),(0,1),(1,0),(1,1)}, prediction {(0,0),(0,1),(2,2),(3,3)}
      -> tp 2, fp 2, fn 2, Dice 0.5; slice 1 empty in both -> 1.  Volume Dice 0.5, slice Dice 0.75.
    case b (4x4x1): prediction equals the 2-pixel label -> 1.
    Overall: volume (0.5 + 1) / 2 = 0.75; slice (0.5 + 1 + 1) / 3 = 5/6; global 2*4 / (8 + 2 + 2) = 2/3.
    """
    labels = tmp_path / "labels"
    labels.mkdir()
    label_a = np.zeros((4, 4, 2), np.uint8)
    label_a[0:2, 0:2, 0] = 1
    pred_a = np.zeros((4, 4, 2), bool)
    pred_a[0, 0, 0] = pred_a[0, 1, 0] = pred_a[2, 2, 0] = pred_a[3, 3, 0] = True
    label_b = np.zeros((4, 4, 1), np.uint8)
    label_b[1, 2, 0] = label_b[3, 0, 0] = 2  # liver+tumour style: any non-zero value is liver by default
    _save(labels / "segmentation-a.nii.gz", label_a)
    _save(labels / "b.nii", label_b)
    sub = tmp_path / "submission.csv"
    write_submission(sub, [("a", pred_a), ("b", label_b > 0)])
    return sub, labels


def test_three_dice_figures_match_hand_computation(scored_pair):
    sub, labels = scored_pair
    ev = evaluate_submission(sub, labels)
    assert ev.volume_dice == pytest.approx(0.75)
    assert ev.slice_dice == pytest.approx(5 / 6)
    assert ev.global_dice == pytest.approx(2 / 3)
    by_case = {c.case: c for c in ev.cases}
    assert by_case["a"].volume_dice == pytest.approx(0.5)
    assert by_case["a"].slice_dice == pytest.approx(0.75)
    assert (by_case["a"].tp, by_case["a"].fp, by_case["a"].fn) == (2, 2, 2)
    assert by_case["b"].volume_dice == pytest.approx(1.0)
    assert by_case["b"].label_voxels == 2


def test_liver_labels_restrict_values(scored_pair):
    sub, labels = scored_pair
    ev = evaluate_submission(sub, labels, liver_labels=[1])
    by_case = {c.case: c for c in ev.cases}
    # with only value 1 as liver, case b's label is empty and its 2 predicted pixels are false positives
    assert by_case["b"].volume_dice == pytest.approx(0.0)
    assert by_case["b"].fp == 2
    # ... which is said: `--liver-labels 2` on labels of 0/1 scored every case 0.0000 without a word
    assert ev.notes == [f"{labels / 'b.nii'}: holds label value 2, none of the liver labels 1: scored as a case "
                        "without liver"] == ev.to_json()["notes"]
    assert evaluate_submission(sub, labels).notes == []  # any value > 0: nothing left out
    from typer.testing import CliRunner

    from liverctl.cli import app

    result = CliRunner().invoke(app, ["evaluate", str(sub), "--labels", str(labels), "--liver-labels", "1"])
    assert result.exit_code == 0, result.output
    assert f"note: {labels / 'b.nii'}: holds label value 2, none of the liver labels 1" in result.stderr


REAL_TEST_IDS = ["tdcmqi-3slice", "ttotalseg-dicom20", "ttotalseg-example"]  # the real CT samples as test cases


def _real_ids_scored(tmp_path):
    """A submission and a labels folder of one-voxel masks for REAL_TEST_IDS: (CSV, labels folder, ids)."""
    labels = tmp_path / "labels"
    labels.mkdir()
    mask = np.zeros((4, 4, 1), np.uint8)
    mask[1, 1, 0] = 1
    for case in REAL_TEST_IDS:
        _save(labels / f"segmentation-{case}.nii.gz", mask)
    sub = tmp_path / "submission.csv"
    write_submission(sub, [(case, mask > 0) for case in REAL_TEST_IDS])
    return sub, labels, list(REAL_TEST_IDS)


def test_the_per_case_table_shows_every_case_id_whole(tmp_path):
    """The real CT samples scored as test cases tdcmqi-3slice, ttotalseg-dicom20 and ttotalseg-example: the table
    cut each id to 'tdcmqi-3sli…', 'ttotalseg-d…', 'ttotalseg-e…' at 80 columns, in a pipe too (at 60 columns
    two rows read 'ttotal…'). Ids are whole now."""
    from typer.testing import CliRunner

    from liverctl.cli import app

    sub, labels, ids = _real_ids_scored(tmp_path)
    for columns in ("80", "60"):
        result = CliRunner().invoke(app, ["evaluate", str(sub), "--labels", str(labels)], env={"COLUMNS": columns})
        assert result.exit_code == 0, result.output
        for case in ids:
            assert f"│ {case} " in result.stdout, (columns, result.stdout)
        assert "…" not in result.stdout


def test_a_terminal_narrower_than_the_scores_breaks_them_between_figures_never_inside_one(tmp_path, monkeypatch):
    """On a 60-column terminal the three real CT test cases' figures printed as one 135-character line that the
    terminal broke inside a figure ('slice Dice 0.0787 (m' / 'ean over slices, ...'). Each case is a record,
    each figure whole, no line wider than the terminal."""
    import io

    from rich.console import Console
    from typer.testing import CliRunner

    import liverctl.commands.submit as submit_command
    from liverctl.cli import app

    sub, labels, ids = _real_ids_scored(tmp_path)
    screen = io.StringIO()
    monkeypatch.setattr(submit_command, "console", Console(file=screen, width=60, force_terminal=True,
                                                           color_system=None, emoji=False))
    result = CliRunner().invoke(app, ["evaluate", str(sub), "--labels", str(labels)])
    assert result.exit_code == 0, result.output
    lines = screen.getvalue().splitlines()
    assert all(case in lines for case in ids)  # each case a record under its whole id
    assert "volume Dice 1.0000 (mean over 3 cases)" in lines
    assert "slice Dice 1.0000 (mean over slices, empty-on-empty = 1)" in lines
    assert "global Dice 1.0000 (pooled voxels)" in lines
    assert all(len(line) <= 60 for line in lines if not line.startswith("scores saved to")), lines


def test_scores_json_beside_submission(scored_pair):
    sub, labels = scored_pair
    ev = evaluate_submission(sub, labels)
    path = write_scores(ev, scores_path(sub))
    assert path == sub.with_name("submission.scores.json")
    data = json.loads(path.read_text())
    assert data["volume_dice"] == pytest.approx(0.75)
    assert [c["case"] for c in data["cases"]] == ["a", "b"]
    assert data["sha256"] == hashlib.sha256(sub.read_bytes()).hexdigest()  # `runs` matches scores to submissions by it


def test_the_csv_is_read_once_and_the_sha256_is_of_the_bytes_scored(scored_pair, monkeypatch):
    """`evaluate` parsed the CSV, then read it again for its sha256: twice the reading, and a file replaced
    meanwhile (a `submit` writing the same path) got the new file's sha256 beside the old file's scores."""
    from liverctl.infer import evaluate

    sub, labels = scored_pair
    scored = sub.read_bytes()
    real_load = evaluate.read_liver_mask

    def replaced_while_scoring(path, liver_labels=None):
        sub.write_bytes(scored.replace(b"1 0", b"1 1"))  # a valid, different submission
        return real_load(path, liver_labels)

    monkeypatch.setattr(evaluate, "read_liver_mask", replaced_while_scoring)
    reads = count_reads(monkeypatch, sub.name)
    ev = evaluate_submission(sub, labels)
    assert len(reads) == 1, reads
    assert ev.sha256 == hashlib.sha256(scored).hexdigest() != hashlib.sha256(sub.read_bytes()).hexdigest()


def test_malformed_submission_lists_problems(scored_pair):
    sub, labels = scored_pair
    lines = sub.read_text().splitlines()
    lines[1] = lines[1].split(",")[0] + ",1 2 3"  # odd number of values
    lines.append("zz_0,1 0")  # unknown case
    lines.append("a_1,15 9")  # duplicate id, and a run leaving a 16-pixel slice
    sub.write_text("\n".join(lines) + "\n")
    with pytest.raises(MalformedSubmission) as info:
        evaluate_submission(sub, labels)
    text = [str(p) for p in info.value.problems]
    assert text == [
        "line 2 (id 'a_0'): odd number of values (3): expected start/length pairs",
        "line 5 (id 'zz_0'): unknown id: no such test case",
        "line 6 (id 'a_1'): duplicate id (first on line 3)",
    ]
    # `liverctl evaluate` lists them, each once: its error line counts them rather than repeating the first
    from typer.testing import CliRunner

    from liverctl.cli import app

    result = CliRunner().invoke(app, ["evaluate", str(sub), "--labels", str(labels)])
    assert result.exit_code == 2
    assert [line.strip() for line in result.output.splitlines()] == [
        *text, f"error: {sub}: malformed submission: 3 problems (above)"]


def test_missing_ids_and_label_folder_problems(scored_pair, tmp_path):
    sub, labels = scored_pair
    lines = sub.read_text().splitlines()
    sub.write_text("\n".join(lines[:-1]) + "\n")  # drop b_0
    with pytest.raises(MalformedSubmission, match="case 'b': 1 of 1 slice id"):
        evaluate_submission(sub, labels)
    with pytest.raises(LiverctlError, match="label folder not found"):
        evaluate_submission(sub, tmp_path / "nope")
    with pytest.raises(LiverctlError, match="b.nii: is a file, expected the folder of label volumes"):  # was 'not found'
        evaluate_submission(sub, labels / "b.nii")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LiverctlError, match="no .nii"):
        find_label_files(empty)
    _save(labels / "a.nii.gz", np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(LiverctlError, match="two label files for case 'a'"):
        find_label_files(labels)


def test_a_label_folder_of_other_cases_is_a_line_per_case_not_one_per_row(scored_pair, tmp_path):
    """Scored against a folder whose labels are named otherwise (TotalSegmentator's liver.nii.gz), a 20-slice
    case was 20 lines of "unknown id: no such test case", and the line saying which case the labels hold came
    last, cut off as "... and 1 more". Each case the CSV names and no label is, is now one line."""
    from typer.testing import CliRunner

    from liverctl.cli import app

    sub, labels = scored_pair
    other = tmp_path / "other"
    other.mkdir()
    (labels / "segmentation-a.nii.gz").rename(other / "liver.nii.gz")  # 4x4x2: case 'a', 2 rows
    result = CliRunner().invoke(app, ["evaluate", str(sub), "--labels", str(other)])
    assert result.exit_code == 2
    assert [line.strip() for line in result.output.splitlines()] == [
        "line 2 (id 'a_0'): unknown id: no such test case (case 'a': 2 rows, the last on line 3)",
        "line 4 (id 'b_0'): unknown id: no such test case",
        "file: case 'liver': 2 of 2 slice ids missing (e.g. liver_0, liver_1)",
        f"error: {sub}: malformed submission: 3 problems (above)"]


def test_a_folder_given_as_the_submission_is_named_as_one(scored_pair):
    """`evaluate data --labels labels` (the folder for the CSV) said "data: submission not found"."""
    _, labels = scored_pair
    with pytest.raises(LiverctlError, match="labels: is a folder, expected the submission"):
        evaluate_submission(labels, labels)


def test_the_label_folder_is_listed_by_ingests_rule(scored_pair):
    """A macOS `._segmentation-a.nii.gz` was taken for a label ('cannot be read as NIfTI'), `b.NII` was left
    out (its rows then 'unknown'), and a folder named like NIfTI was a case."""
    sub, labels = scored_pair
    (labels / "b.nii").rename(labels / "b.NII")
    (labels / "._segmentation-a.nii.gz").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (labels / "c.nii.gz").mkdir()
    ev = evaluate_submission(sub, labels)
    assert [c.case for c in ev.cases] == ["a", "b"] and ev.volume_dice == pytest.approx(0.75)
    (labels / "c.nii").symlink_to("annexed")
    with pytest.raises(LiverctlError, match="c.nii: a link that leads to no file"):
        evaluate_submission(sub, labels)


def test_untrusted_label_headers_are_refused_before_reading(scored_pair, tmp_path):
    from nifti_fixtures import header_only

    sub, labels = scored_pair
    absurd = header_only(labels / "c.nii.gz", [2048, 2048, 256])
    with pytest.raises(LiverctlError, match="header claims 2048 x 2048 x 256 int16 voxels") as info:
        evaluate_submission(sub, labels)
    assert str(info.value).startswith(f"{absurd}: ")
    absurd.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(LiverctlError, match="cannot be read as NIfTI"):
        evaluate_submission(sub, labels)


@pytest.mark.parametrize("value", [",", " , ,", "one"])
def test_liver_labels_that_name_no_value_are_refused(scored_pair, value):
    """`--liver-labels ,` named no label and was scored as 'any non-zero' (the default), exit 0."""
    from typer.testing import CliRunner

    from liverctl.cli import app

    sub, labels = scored_pair
    result = CliRunner().invoke(app, ["evaluate", str(sub), "--labels", str(labels), "--liver-labels", value])
    assert result.exit_code == 2 and "--liver-labels takes comma-separated integers" in result.output
    assert not scores_path(sub).exists()


@pytest.mark.parametrize("value, words", [
    ("-1", "--liver-labels -1: no label map holds -1; label values are whole numbers from 0 (background) to "
           "18446744073709551615 (the most a NIfTI integer holds)"),
    ("1,99999999999999999999", "--liver-labels 1,99999999999999999999: no label map holds 99999999999999999999;"),
    ("256", "segmentation-a.nii.gz: holds uint8 label values (0 to 255): none of the liver labels 256 can be among "
            "them; which values mean liver in it (--liver-labels)?"),
    ("0", "--liver-labels 0: 0 is the background of a label map (every voxel outside the labelled structures), not "
          "liver; give the values that mean liver (--liver-labels), e.g. 1"),
])
def test_liver_labels_no_label_map_holds_are_refused(scored_pair, value, words):
    """`evaluate --liver-labels -1` (or 256 for a uint8 label, or 10^20) scored every case against no liver, exit 0.
    Now one line: a value below 0 or beyond a uint64 before anything is read, one a label's type cannot hold naming
    that file (its liver is empty whatever it holds)."""
    from typer.testing import CliRunner

    from liverctl.cli import app

    sub, labels = scored_pair
    result = CliRunner().invoke(app, ["evaluate", str(sub), "--labels", str(labels), f"--liver-labels={value}"])
    (line,) = result.output.strip().splitlines()
    assert result.exit_code == 2 and line.startswith("error: ") and words in line, result.output
    assert not scores_path(sub).exists()
    assert evaluate_submission(sub, labels, liver_labels=[1, 256]).volume_dice is not None  # one value it can hold


def _real_label_as_pairs(tmp_path):
    """dcmqi's real label (512 x 512 x 3, LPS; 1 liver, 2 spine) in three label folders: as it is (.nii.gz), as
    a NIfTI pair (segmentation-1.hdr + .img) and as an Analyze 7.5 pair (SEGMENTATION-1.HDR + .IMG), and a
    prediction of it: its liver moved by 3 voxels along x. Returns (submission, {folder kind: folder})."""
    from pathlib import Path

    real = Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "dcmqi-3slice" / "label.nii.gz"
    if not real.exists():
        real = Path("/work/shared/data/real/dcmqi-3slice/label.nii.gz")
    if not real.exists():
        pytest.skip("real data not available")
    img = nib.load(str(real))
    data = np.asanyarray(img.dataobj)
    folders = {kind: tmp_path / kind for kind in ("nii", "pair", "analyze")}
    for folder in folders.values():
        folder.mkdir()
    nib.save(img, str(folders["nii"] / "segmentation-1.nii.gz"))
    nib.save(nib.Nifti1Pair(data, img.affine, img.header), str(folders["pair"] / "segmentation-1.hdr"))
    nib.save(nib.AnalyzeImage(data, img.affine), str(folders["analyze"] / "SEGMENTATION-1.HDR"))
    sub = tmp_path / "submission.csv"
    write_submission(sub, [("1", np.roll(data == 1, 3, axis=0))])
    return sub, folders


def test_a_real_label_as_an_analyze_or_nifti_pair_scores_as_its_nii_gz(tmp_path):
    """Ingest's rule listed only .nii / .nii.gz: labels as .hdr/.img pairs were 'no .nii / .nii.gz label volumes
    in this folder'. Now a pair is a label as its .nii.gz is, with the same figures."""
    sub, folders = _real_label_as_pairs(tmp_path)
    scores = {kind: evaluate_submission(sub, folder, liver_labels=[1]).to_json() for kind, folder in folders.items()}
    for kind, ev in scores.items():
        assert [c["case"] for c in ev["cases"]] == ["1"], kind
        ev.pop("labels")
    assert scores["pair"] == scores["nii"] == scores["analyze"]
    assert 0.5 < scores["nii"]["volume_dice"] < 0.99  # the moved liver: neither nothing nor everything


def test_a_pair_missing_a_half_or_its_voxels_is_one_line_naming_the_file(tmp_path):
    from typer.testing import CliRunner

    from liverctl.cli import app

    sub, folders = _real_label_as_pairs(tmp_path)
    pair = folders["pair"]
    img = (pair / "segmentation-1.img").read_bytes()
    (pair / "segmentation-1.img").unlink()
    with pytest.raises(LiverctlError) as info:
        evaluate_submission(sub, pair)
    assert str(info.value) == (f"{pair / 'segmentation-1.hdr'}: an Analyze header without its voxel file: "
                               "segmentation-1.img is missing")
    (pair / "segmentation-1.img").write_bytes(img)
    (pair / "segmentation-1.hdr").rename(tmp_path / "hdr")
    with pytest.raises(LiverctlError, match=r"segmentation-1.img: an Analyze voxel file without its header: "
                                            r"segmentation-1.hdr is missing"):
        evaluate_submission(sub, pair)
    (tmp_path / "hdr").rename(pair / "segmentation-1.hdr")
    (pair / "segmentation-1.img").write_bytes(img[: len(img) // 2])
    result = CliRunner().invoke(app, ["evaluate", str(sub), "--labels", str(pair)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith(f"error: {pair / 'segmentation-1.hdr'}: header claims 512 x 512 x 3 ")
    assert "but the voxel file segmentation-1.img holds 384.0 KB" in result.stderr
    (pair / "segmentation-1.img").write_bytes(img)
    nib.save(nib.load(str(folders["nii"] / "segmentation-1.nii.gz")), str(pair / "1.nii.gz"))
    with pytest.raises(LiverctlError, match="two label files for case '1'"):
        evaluate_submission(sub, pair)


def test_a_submission_in_a_read_only_folder_is_scored_and_its_scores_shown(scored_pair, tmp_path, monkeypatch):
    """A CSV attached on Kaggle (another notebook's output) sits in /kaggle/input, read-only: `evaluate
    ../input/nb/submission.csv --labels ...` printed only 'error: ../input/nb/.submission.scores.json.31846.tmp
    (in ...): read-only file system; point the command at a folder ...', no figure at all. Now the figures are
    printed and a note says the scores beside the CSV were not saved; --json saves them elsewhere."""
    import errno

    from typer.testing import CliRunner

    import liverctl.files
    from liverctl.cli import app

    sub, labels = scored_pair
    real_open = open

    def read_only_beside_csv(path, *args, **kwargs):  # what a read-only mount answers (chmod does not stop root)
        if os.path.dirname(os.fspath(path)) == str(sub.parent):
            raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(liverctl.files, "open", read_only_beside_csv, raising=False)
    elsewhere = tmp_path / "working" / "scores.json"
    elsewhere.parent.mkdir()
    for extra in ([], ["--json", str(elsewhere)]):
        result = CliRunner().invoke(app, ["evaluate", str(sub), "--labels", str(labels), *extra],
                                    env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert "volume Dice 0.7500" in result.stdout
        assert f"note: {scores_path(sub)}: not saved beside the CSV (Read-only file system)" in result.stderr
        # the advice to use --json FILE only where it was not given (it was repeated to a user who had)
        assert ("--json FILE" in result.stderr) == (not extra)
        assert (f"only in {elsewhere}" in result.stderr) == bool(extra)
        assert not scores_path(sub).exists()
    assert json.loads(elsewhere.read_text())["volume_dice"] == pytest.approx(0.75)
    assert f"scores saved to {elsewhere}" in result.stdout


def test_a_full_disk_beside_the_submission_fails_after_the_figures_are_shown(scored_pair, monkeypatch):
    """A full disk is no read-only folder: the scores cannot be saved, so evaluate fails, but only after
    printing the figures it computed (it printed none: the write came first)."""
    from full_disk import fill_disk
    from typer.testing import CliRunner

    from liverctl.cli import app

    sub, labels = scored_pair
    fill_disk(monkeypatch)
    result = CliRunner().invoke(app, ["evaluate", str(sub), "--labels", str(labels)], env={"COLUMNS": "200"})
    assert result.exit_code != 0
    assert "volume Dice 0.7500" in result.stdout
    assert f"error: {scores_path(sub)}: no space left on" in result.stderr, result.stderr
    assert "scores saved" not in result.stdout
    assert not scores_path(sub).exists()

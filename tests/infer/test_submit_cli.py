"""CLI tests of `submit`, `postprocess` and `evaluate` on the tiny synthetic store.

`submit` runs on a small untrained model saved as a run checkpoint (what `load_run_model` reads), so
these tests check the plumbing (ids, shapes, files, errors), not the quality of the masks; the
trained-run test at the end is marked slow.
"""

import csv
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import liverctl.infer.predict
from liverctl.cli import app
from liverctl.files import file_sha256
from liverctl.runs.summary import summarize_run

runner = CliRunner()
# The real CT samples sit beside the repository (../shared/data/real), as in tests/conftest.py.
REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
if not REAL.is_dir():
    REAL = Path("/work/shared/data/real")


def make_run(root: Path, store: Path, name: str = "tiny", *, context: int = 1, seed: int = 0, **data) -> Path:
    """A run folder holding only `checkpoints/best.pt` of a small untrained U-Net (32 px input)."""
    import torch

    from liverctl.config import resolve_config
    from liverctl.runs.checkpoint import save_checkpoint
    from liverctl.train.models import build_model

    cfg = resolve_config("demo", [f"data.context={context}", "data.input_size=32"])
    cfg["data"]["store"] = str(store)
    cfg["data"].update(data)
    cfg["model"].update(encoder="tu-mobilenetv3_small_050", decoder_channels=[16, 8, 8, 8, 8])
    cfg["infer"]["batch_size"] = 8
    torch.manual_seed(seed)
    model = build_model(cfg, pretrained=False)
    run_dir = root / name
    save_checkpoint(run_dir, "best", {"run": name, "preset": "demo", "config": cfg, "epoch": 1, "global_step": 1,
                                      "model": model.state_dict(), "metrics": {}, "best": {}, "versions": {},
                                      "saved_at": 1_700_000_000.0 + seed})  # as the trainer records it
    return run_dir


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """On a shared 2-core machine two OpenMP threads can run a tiny model 100x slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def template_runs(tiny_store, tmp_path_factory):
    """Runs built once per module (context 1 and context 0); tests copy them before writing into them."""
    root = tmp_path_factory.mktemp("template-runs")
    return {"c1": make_run(root, tiny_store, "c1", context=1, seed=0),
            "c0": make_run(root, tiny_store, "c0", context=0, seed=1)}


def copy_run(template: Path, root: Path, name: str) -> Path:
    return Path(shutil.copytree(template, root / name))


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _test_ids(store):
    from liverctl.data.store import LiverStore

    s = LiverStore.open(store)
    return {c: s.meta(c)["shape"] for c in s.case_ids("test")}


def test_submit_writes_a_valid_csv_and_records_it(tiny_store, tiny_dataset, template_runs, tmp_path):
    run = copy_run(template_runs["c1"], tmp_path, "tiny")
    out = tmp_path / "sub.csv"
    masks = tmp_path / "masks"
    result = _invoke("submit", "--run", run, "--out", out, "--tta", "flips", "--postprocess", "largest",
                     "--save-masks", masks)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "tta flips" in result.output
    shapes = _test_ids(tiny_store)
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["id", "rle"]
    assert [r[0] for r in rows[1:]] == [f"{c}_{z}" for c in sorted(shapes) for z in range(shapes[c][2])]

    # the saved masks are what the CSV encodes, on the source grid
    from liverctl.infer.submission import read_submission

    parsed = read_submission(out, shapes)
    for case in shapes:
        img = nib.load(str(masks / f"{case}.nii.gz"))
        source = nib.load(str(tiny_dataset / "test" / f"volume-{case}.nii.gz"))
        assert np.array_equal(img.affine, source.affine)
        assert img.get_data_dtype() == np.uint8
        assert np.array_equal(np.asanyarray(img.dataobj).astype(bool), parsed.volume(case))

    (record,) = [json.loads(line) for line in (run / "submissions.jsonl").read_text().splitlines()]
    assert record["csv"] == str(out.resolve()) and record["tta"] == "flips" and record["post"] == "largest"
    assert len(record["sha256"]) == 64 and record["runs"] == [str(run.resolve())]
    assert record["ensemble"] is False and record["members"][0]["sha256"] == file_sha256(run / "checkpoints" / "best.pt")
    assert record["device"] == "cpu" and 0 < record["seconds"] < 600

    # and evaluate scores it against the synthetic test labels
    result = _invoke("evaluate", out, "--labels", tiny_dataset / "test_labels")
    assert result.exit_code == 0, result.output
    assert "volume Dice" in result.output
    scores = json.loads((tmp_path / "sub.scores.json").read_text())
    assert sorted(c["case"] for c in scores["cases"]) == sorted(shapes)
    want = dice_by_hand({c: parsed.volume(c) for c in shapes}, tiny_dataset / "test_labels")
    for key in ("volume_dice", "slice_dice", "global_dice"):
        assert scores[key] == pytest.approx(want[key], abs=1e-12), key


def test_submit_ensemble_sample_and_auto(tiny_store, template_runs, tmp_path):
    runs = [copy_run(template_runs["c1"], tmp_path, "a"), copy_run(template_runs["c0"], tmp_path, "b")]
    shapes = _test_ids(tiny_store)
    ids = [f"{c}_{z}" for c in sorted(shapes) for z in range(shapes[c][2])][::-1]
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("Id,Predicted\n" + "".join(f"{i},1 0\n" for i in ids))
    out = tmp_path / "ens.csv"
    result = _invoke("submit", "--run", runs[0], "--run", runs[1], "--out", out, "--sample", sample,
                     "--tta", "none", "--postprocess", "auto")
    assert result.exit_code == 0, result.output
    assert "post-processing auto ->" in result.output and "validation case" in result.output
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["Id", "Predicted"] and [r[0] for r in rows[1:]] == ids
    members = [{"run": str(r.resolve()), "checkpoint": str((r / "checkpoints" / "best.pt").resolve()),
                "sha256": file_sha256(r / "checkpoints" / "best.pt"),
                "epoch": json.loads((r / "checkpoints" / "best.json").read_text())["epoch"],
                "saved_at": json.loads((r / "checkpoints" / "best.json").read_text())["saved_at"]} for r in runs]
    for run in runs:
        record = json.loads((run / "submissions.jsonl").read_text())
        assert record["post_requested"] == "auto" and record["auto_scores"]
        assert len(record["runs"]) == 2
        # which checkpoints made it, and that it was an ensemble: `runs` shows it as one, not as the run's own
        assert record["ensemble"] is True and record["members"] == members
        (entry,) = summarize_run(run).submissions
        assert entry["made_with"] == "ensemble" and entry["runs"] == 2


def test_submit_bad_inputs_fail_in_one_line_without_csv(tiny_store, template_runs, tmp_path):
    out = tmp_path / "sub.csv"
    empty_run = tmp_path / "runs" / "empty"
    empty_run.mkdir(parents=True)
    result = _invoke("submit", "--run", empty_run, "--out", out)
    assert result.exit_code != 0 and "no 'best' checkpoint" in result.output

    run = template_runs["c1"]
    sample = tmp_path / "sample.csv"
    sample.write_text("id,rle\n999_0,1 0\n")
    result = _invoke("submit", "--run", run, "--out", out, "--sample", sample)
    assert result.exit_code != 0 and "1 sample id matches no test slice" in result.output

    result = _invoke("submit", "--run", run, "--out", out, "--postprocess", "bigest")
    assert result.exit_code != 0 and "unknown post-processing" in result.output

    bad_size = _edit_config(copy_run(template_runs["c1"], tmp_path, "odd"), ("data", "input_size", 48))
    result = _invoke("submit", "--run", bad_size, "--out", out)
    assert result.exit_code != 0 and "multiple of 32" in result.output  # refused when the checkpoint loads
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_prediction_out_of_memory_is_one_line_and_writes_no_csv(template_runs, tmp_path, monkeypatch):
    """torch's out-of-memory error (CUDA's, where --batch-size slices do not fit the GPU) was a traceback."""
    from liverctl.infer.submit import _memory_advice

    def predict(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB. GPU 0 has a total capacity of "
                                     "15.89 GiB of which 0.90 GiB is free. Including non-PyTorch memory, ...")

    monkeypatch.setattr(liverctl.infer.predict, "tta_probabilities", predict)
    out = tmp_path / "sub.csv"
    result = _invoke("submit", "--run", copy_run(template_runs["c1"], tmp_path, "r"), "--out", out, "--device", "cpu")
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        "error: prediction on cpu ran out of memory (CUDA out of memory. Tried to allocate 1.50 GiB. GPU 0 has a "
        "total capacity of 15.89 GiB of which 0.90 GiB is free.); free memory for it (other programs) or predict on "
        "a GPU (--device cuda)")
    assert not out.exists()
    assert _memory_advice("cuda:0", 16) == ("prediction at --batch-size 16",
                                            "lower --batch-size (its default is the run's infer.batch_size)")


@pytest.mark.parametrize("n, words", [
    (1, "1 sample id matches no test slice (e.g. '990_0'); 1 test slice is not in the sample"),
    (2, "2 sample ids match no test slice (e.g. '990_0'); 2 test slices are not in the sample"),
])
def test_a_sample_of_other_slices_is_counted_in_words_that_agree(tiny_store, template_runs, tmp_path, n, words):
    """It said "1 sample id(s) match no test slice; 1 test slice(s) are not in the sample"."""
    shapes = _test_ids(tiny_store)
    ids = [f"{c}_{z}" for c, shape in shapes.items() for z in range(shape[2])]
    sample = tmp_path / "sample.csv"
    sample.write_text("id,rle\n" + "".join(f"{i},1 0\n" for i in ids[n:] + [f"99{k}_0" for k in range(n)]))
    out = tmp_path / "sub.csv"
    result = _invoke("submit", "--run", template_runs["c1"], "--out", out, "--sample", sample)
    assert result.exit_code != 0
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: {sample}: {words} (e.g. {ids[0]!r}) ({len(shapes)} test cases in the store); "), line
    assert not out.exists()


def test_a_run_is_found_by_name_under_runs_dir(template_runs, tmp_path, monkeypatch):
    """`submit --run NAME` said 'run folder not found' where report, watch and --resume take names."""
    from liverctl.errors import LiverctlError

    def loaded(run_dirs, **_):
        raise LiverctlError(f"would load {[str(p) for p in run_dirs]}")

    monkeypatch.setattr(liverctl.infer.predict, "load_run_models", loaded)
    run = template_runs["c1"]
    out = tmp_path / "s.csv"
    result = _invoke("submit", "--run", run.name, "--runs-dir", run.parent, "--out", out)
    assert result.exit_code == 2 and f"would load ['{run}']" in result.output
    result = _invoke("submit", "--run", "nope", "--runs-dir", run.parent, "--out", out)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert f"--run: no run 'nope' (looked for the folders nope and {run.parent / 'nope'})" in result.output
    result = _invoke("submit", "--run", run, "--out", out, "--batch-size", "0")
    assert result.exit_code == 2 and "--batch-size must be at least 1, not 0" in result.output
    assert not out.exists()


def test_a_threshold_outside_0_1_is_refused_before_any_prediction(template_runs, tmp_path, monkeypatch):
    """--threshold 2 (or nan, or -1) wrote a CSV of all-empty (all-full) masks and exited 0; so did a
    checkpoint whose config says infer.threshold = 7."""
    monkeypatch.setattr(liverctl.infer.predict, "load_run_models", lambda *a, **k: pytest.fail("loaded a model"))
    out = tmp_path / "s.csv"
    for value in ("2", "nan", "-1", "0", "1"):
        result = _invoke("submit", "--run", template_runs["c1"], "--out", out, "--threshold", value)
        assert result.exit_code == 2, result.output
        assert "--threshold" in result.output and "between 0 and 1" in result.output
        assert len(result.output.strip().splitlines()) == 1 and not out.exists()
    monkeypatch.undo()
    run = _edit_config(copy_run(template_runs["c1"], tmp_path, "t7"), ("infer", "threshold", 7.0))
    result = _invoke("submit", "--run", run, "--out", out)
    assert result.exit_code == 2 and "infer.threshold 7.0: a probability threshold" in result.output
    assert str(run / "checkpoints" / "best.pt") in result.output and not out.exists()


def test_submit_store_without_test_cases(real_store, template_runs, tmp_path):
    out = tmp_path / "sub.csv"
    result = _invoke("submit", "--run", template_runs["c1"], "--out", out, "--store", real_store)
    assert result.exit_code != 0 and "store has no test cases" in result.output
    assert not out.exists()


def test_a_runs_relative_store_is_found_from_another_folder_where_the_run_recorded_it(tiny_store, template_runs,
                                                                                     tmp_path, monkeypatch):
    """A run trained with the default data.store (store/liver.zarr, relative), submitted from another folder,
    said "store/liver.zarr: no store here; create one with `liverctl ingest ...`" of a store that is there,
    beside the folder it was trained in. Its run_start records the store's absolute path: submit finds it there;
    a run that recorded none (trained before) is told whose path it is and to pass --store."""
    from liverctl.runs.events import EventWriter

    run = _edit_config(copy_run(template_runs["c1"], tmp_path, "rel"), ("data", "store", "store/liver.zarr"))
    EventWriter(run, "rel").emit("run_start", store=str(tiny_store.absolute()))  # as training records it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = tmp_path / "s.csv"
    result = _invoke("submit", "--run", run, "--out", out)
    assert result.exit_code == 0, result.output
    assert len(list(csv.reader(out.open()))) - 1 == sum(shape[2] for shape in _test_ids(tiny_store).values())
    out.unlink()
    (run / "events.jsonl").unlink()  # a run trained before liverctl recorded its store
    result = _invoke("submit", "--run", run, "--out", out)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert ("store/liver.zarr: no store here (the data.store of run rel, relative to the folder the run was trained "
            "in); pass --store PATH") in result.output and "ingest" not in result.output
    assert not out.exists()


def _edit_config(run: Path, *edits) -> Path:
    """Rewrite a run's checkpoint with config edits (section, key, value), weights untouched."""
    from liverctl.runs.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(run / "checkpoints" / "best.pt")
    for section, key, value in edits:
        state["config"][section][key] = value
    state.pop("format")
    save_checkpoint(run, "best", state)
    return run


def test_submit_rejects_weights_that_do_not_fit_the_config(template_runs, tmp_path):
    run = _edit_config(copy_run(template_runs["c1"], tmp_path, "x"), ("data", "context", 2))  # 5 channels vs 3
    out = tmp_path / "s.csv"
    result = _invoke("submit", "--run", run, "--out", out)
    assert result.exit_code == 2
    assert "checkpoint weights do not fit the model its config describes" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_weights_with_a_key_missing_or_extra_name_it(template_runs, tmp_path):
    """torch's first line ("Error(s) in loading state_dict for Unet:") was all the message said."""
    from liverctl.runs.checkpoint import load_checkpoint, save_checkpoint

    out = tmp_path / "s.csv"
    for name, edit, expected in (
        ("missing", lambda m: m.pop("segmentation_head.0.bias"), 'Missing key(s) in state_dict: "segmentation_head.0.bias"'),
        ("extra", lambda m: m.update(bogus=m["segmentation_head.0.bias"]), 'Unexpected key(s) in state_dict: "bogus"'),
    ):
        run = copy_run(template_runs["c1"], tmp_path, name)
        state = load_checkpoint(run / "checkpoints" / "best.pt")
        edit(state["model"])
        state.pop("format")
        save_checkpoint(run, "best", state)
        result = _invoke("submit", "--run", run, "--out", out)
        assert result.exit_code == 2 and expected in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_evaluate_reports_malformed_rows(tiny_dataset, tmp_path):
    labels = tiny_dataset / "test_labels"
    sub = tmp_path / "bad.csv"
    lines = ["id,rle"] + [f"{c}_{z},1 0" for c in ("6", "7") for z in range(24)]
    lines[1] = "6_0,1 2 3"
    lines[2] = "6_1,4095 5"
    lines.append("8_0,1 0")
    sub.write_text("\n".join(lines) + "\n")
    result = _invoke("evaluate", sub, "--labels", labels)
    assert result.exit_code == 2
    assert "line 2 (id '6_0'): odd number of values" in result.output
    assert "line 3 (id '6_1'): run 4095 5 ends at pixel 4099, past the image's 4096 pixels" in result.output
    assert "unknown id" in result.output
    assert "malformed submission: 3 problems (above)" in result.output and result.output.count("odd number") == 1
    assert not (tmp_path / "bad.scores.json").exists()


def test_evaluate_json_to_stdout(tiny_dataset, tmp_path):
    """`--json -` as with `bench`: stdout is the JSON alone (for a pipe), the table goes to stderr (it was
    not printed at all); a --json naming a folder is refused before the scoring."""
    sub = tmp_path / "empty.csv"
    sub.write_text("id,rle\n" + "".join(f"{c}_{z},1 0\n" for c in ("6", "7") for z in range(24)))
    result = _invoke("evaluate", sub, "--labels", tiny_dataset / "test_labels", "--json", "-")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["volume_dice"] == 0.0  # the synthetic test cases do contain liver
    assert len(data["cases"]) == 2
    assert "volume Dice 0.0000 (mean over 2 cases)" in result.stderr and "label voxels" in result.stderr
    one = tmp_path / "one_label"  # and one case is "1 case" (it was "mean over 1 cases")
    one.mkdir()
    shutil.copy(next((tiny_dataset / "test_labels").glob("*-6.nii*")), one)
    sub.write_text("id,rle\n" + "".join(f"6_{z},1 0\n" for z in range(24)))
    single = _invoke("evaluate", sub, "--labels", one)
    assert single.exit_code == 0, single.output
    assert "(mean over 1 case)" in single.output
    assert f"scores saved to {tmp_path / 'empty.scores.json'}" in " ".join(result.stderr.split())
    assert not (tmp_path / "-").exists()
    (tmp_path / "empty.scores.json").unlink()
    result = _invoke("evaluate", sub, "--labels", tiny_dataset / "test_labels", "--json", tmp_path)
    assert result.exit_code == 2 and "is a folder; --json takes a file name, e.g. scores.json" in result.stderr
    assert not (tmp_path / "empty.scores.json").exists()  # refused before anything was scored or written
    # `--json` alone is stdout, as `runs --json` (it took the next option for its file: a file named "--labels")
    alone = _invoke("evaluate", sub, "--json", "--labels", one)  # `sub` is case 6's alone now
    assert alone.exit_code == 0, alone.output
    assert len(json.loads(alone.stdout)["cases"]) == 1 and not (Path.cwd() / "--labels").exists()


def test_postprocess_cli_on_real_volume(tmp_path):
    src = REAL / "totalseg-example" / "liver.nii.gz"
    if not src.exists():
        pytest.skip("real data not available")
    out = tmp_path / "clean.nii.gz"
    result = _invoke("postprocess", src, out, "--mode", "largest+fill2d")
    assert result.exit_code == 0, result.output
    assert "cleaned 1 file with" in result.output
    a, b = nib.load(str(src)), nib.load(str(out))
    assert np.array_equal(a.affine, b.affine) and a.header.binaryblock == b.header.binaryblock

    result = _invoke("postprocess", src, out, "--mode", "auto")
    assert result.exit_code != 0 and "use it with `liverctl submit`" in result.output
    result = _invoke("postprocess", src, out, "--liver-labels", "one")
    assert result.exit_code != 0 and "comma-separated integers" in result.output


def test_submit_and_evaluate_a_tiny_trained_run(tiny_store, tiny_dataset, tmp_path):
    """The real chain: `run_training` for a few steps, then `submit` and `evaluate` through the CLI."""
    from liverctl.config import resolve_config
    from liverctl.train.loop import run_training

    cfg = resolve_config("demo", [
        "data.input_size=32", 'model.encoder="tu-mobilenetv3_small_050"', "model.decoder_channels=[16,8,8,8,8]",
        "train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=4", "data.num_workers=0",
        f'data.store="{tiny_store}"',
    ])
    run_dir = tmp_path / "runs" / "trained"
    outcome = run_training(cfg, run_dir, device="cpu", show_progress=False)
    assert outcome["status"] == "completed"

    out = tmp_path / "submission.csv"
    result = _invoke("submit", "--run", run_dir, "--out", out, "--tta", "hflip", "--postprocess", "largest+fill2d")
    assert result.exit_code == 0, result.output
    result = _invoke("evaluate", out, "--labels", tiny_dataset / "test_labels", "--json", "-")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert {c["case"] for c in scores["cases"]} == set(_test_ids(tiny_store))
    want = dice_by_hand(submitted_masks(out, tiny_store), tiny_dataset / "test_labels")
    for key in ("volume_dice", "slice_dice", "global_dice"):
        assert scores[key] == pytest.approx(want[key], abs=1e-12), key
    record = json.loads((run_dir / "submissions.jsonl").read_text())
    assert record["post"] == "largest+fill2d" and record["sha256"] == _sha256(out)


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------------
# Wiring of `submit`, checked with exact masks. The runs hold a deterministic fake model (`FakeNet`,
# saved through `save_checkpoint`, rebuilt by `load_run_model` through a patched `smp.create_model`):
#     logits = bias_map[x, y] + gain * (centre channel > level)
# `bias_map` is fixed per run and NOT symmetric, so every flip of TTA changes the answer; the step on the
# input makes each case (and each slice) predict differently. `expected_probabilities` below recomputes
# the whole pipeline in numpy float64 (input_size = the store's 64 px, so no resize), and every test
# checks that the breakage it guards against would give another mask than the one expected.

SIDE = 64  # the tiny store's slices are 64 x 64: input_size 64 means no resize either way
WINDOW = (-100.0, 200.0)  # the demo preset's data.window
# Stored HU are float16; 35.015625 lies halfway between the float16 values 35.0 and 35.03125, so no
# voxel is closer than 1e-4 to the step after normalisation (float32 rounding is ~3e-8 there).
LEVEL = (35.015625 - WINDOW[0]) / (WINDOW[1] - WINDOW[0])
MAP_VALUES = np.array([-2.5, -1.0, 1.5, 3.0])  # no value is another's negative: no flip pair sums to p=0.5


class FakeNet(torch.nn.Module):
    """(N, C, H, W) -> (N, 1, H, W) logits = bias_map + gain * (centre channel > level)."""

    def __init__(self, *_, **__):
        super().__init__()
        self.bias_map = torch.nn.Parameter(torch.zeros(SIDE, SIDE))
        self.gain = torch.nn.Parameter(torch.zeros(()))
        self.level = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        c = x.shape[1] // 2
        return self.bias_map + self.gain * (x[:, c : c + 1] > self.level).float()


def fake_bias_map(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(MAP_VALUES, size=(SIDE, SIDE))


@pytest.fixture
def fake_models(monkeypatch):
    """Every model built from a config is a `FakeNet` (its weights come from the checkpoint)."""
    import segmentation_models_pytorch as smp

    monkeypatch.setattr(smp, "create_model", lambda *a, **k: FakeNet())


def make_fake_run(root: Path, store: Path, name: str, seed: int, gain: float = 2.0, cases: dict | None = None,
                  **infer) -> Path:
    """A run folder whose best.pt holds a `FakeNet` with the bias map of `seed` (and `cases`, the record of the
    cases it trained and validated on, when given)."""
    from liverctl.config import resolve_config
    from liverctl.runs.checkpoint import save_checkpoint

    cfg = resolve_config("demo", ["data.context=1", f"data.input_size={SIDE}", "data.normalize='window'",
                                  f"data.window=[{WINDOW[0]}, {WINDOW[1]}]", "post.mode='none'", "data.fold=0"])
    cfg["data"]["store"] = str(store)
    cfg["infer"].update(infer)
    net = FakeNet()
    with torch.no_grad():
        net.bias_map.copy_(torch.from_numpy(fake_bias_map(seed)))
        net.gain.fill_(gain)
        net.level.fill_(LEVEL)
    run_dir = root / name
    save_checkpoint(run_dir, "best", {"run": name, "preset": "demo", "config": cfg, "epoch": 1, "global_step": 1,
                                      "model": net.state_dict(), "metrics": {}, "best": {}, "versions": {},
                                      **({"cases": cases} if cases is not None else {})})
    return run_dir


FLIP_AXES = {"none": [()], "hflip": [(), (1,)], "vflip": [(), (0,)], "flips": [(), (1,), (0,), (0, 1)]}


def _case_hu(store: Path, case: str) -> np.ndarray:
    from liverctl.data.store import LiverStore

    s = LiverStore.open(store)
    depth = int(s.meta(case)["shape"][2])
    return np.stack([np.asarray(s.read_slice(case, z), dtype=np.float32) for z in range(depth)], axis=-1)


def expected_probabilities(store: Path, case: str, seeds: list[int], tta: str, gain: float = 2.0,
                           weights: list[float] | None = None) -> np.ndarray:
    """The fake runs' ensemble probability volume (X, Y, Z), float64, by hand (`weights`: each seed's, summing to 1;
    default equal)."""
    normalised = np.clip((_case_hu(store, case) - WINDOW[0]) / (WINDOW[1] - WINDOW[0]), 0.0, 1.0)
    step = (normalised > LEVEL).astype(np.float64)
    total = np.zeros(step.shape)
    weights = weights or [1.0 / len(seeds)] * len(seeds)
    for seed, weight in zip(seeds, weights, strict=True):
        bias = fake_bias_map(seed)[:, :, None]
        for axes in FLIP_AXES[tta]:  # flip the input, predict, flip the probabilities back
            view = np.flip(step, axes) if axes else step
            probs = 1.0 / (1.0 + np.exp(-(bias + gain * view)))
            total += weight * (np.flip(probs, axes) if axes else probs)
    return total / len(FLIP_AXES[tta])


def expected_mask(store, case, seeds, tta, threshold=0.5, weights=None) -> np.ndarray:
    probs = expected_probabilities(store, case, seeds, tta, weights=weights)
    assert np.abs(probs - threshold).min() > 1e-3, "a voxel sits on the threshold: float32 could flip it"
    return probs >= threshold


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Largest 26-connected component, by scipy (not the cc3d the library uses)."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    assert n >= 2 and sorted(sizes)[-1] > sorted(sizes)[-2], "need a unique largest of several components"
    return labels == int(np.argmax(sizes))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def submitted_masks(out: Path, store: Path) -> dict[str, np.ndarray]:
    from liverctl.infer.submission import read_submission

    shapes = _test_ids(store)
    parsed = read_submission(out, shapes)
    return {case: parsed.volume(case) for case in shapes}


@pytest.mark.parametrize("tta", ["none", "hflip", "vflip", "flips"])
def test_submit_applies_the_tta_it_is_given(tiny_store, fake_models, tmp_path, tta):
    run = make_fake_run(tmp_path, tiny_store, "fake", seed=1, tta="none")  # the run's own default: none
    out = tmp_path / "sub.csv"
    result = _invoke("submit", "--run", run, "--out", out, "--tta", tta, "--postprocess", "none", "--device", "cpu")
    assert result.exit_code == 0, result.output
    got = submitted_masks(out, tiny_store)
    for case, mask in got.items():
        want = expected_mask(tiny_store, case, [1], tta)
        if tta != "none":  # ignoring --tta would give the plain prediction, which differs
            assert not np.array_equal(want, expected_mask(tiny_store, case, [1], "none"))
        np.testing.assert_array_equal(mask, want, err_msg=f"case {case}, tta {tta}")


def test_submit_uses_the_runs_tta_when_none_is_given(tiny_store, fake_models, tmp_path):
    run = make_fake_run(tmp_path, tiny_store, "fake", seed=1, tta="hflip")
    out = tmp_path / "sub.csv"
    result = _invoke("submit", "--run", run, "--out", out, "--postprocess", "none", "--device", "cpu")
    assert result.exit_code == 0, result.output
    for case, mask in submitted_masks(out, tiny_store).items():
        np.testing.assert_array_equal(mask, expected_mask(tiny_store, case, [1], "hflip"))


def test_submit_predicts_on_the_cpu_with_the_runs_thread_setting(tiny_store, fake_models, tmp_path, monkeypatch):
    import liverctl.infer.submit

    seen, real = [], liverctl.infer.submit.predict_cases

    def recording(*args, **kwargs):
        seen.append((kwargs["cpu_threads"], kwargs["channels_last"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(liverctl.infer.submit, "predict_cases", recording)
    run = make_fake_run(tmp_path, tiny_store, "fake", seed=1, tta="hflip", cpu_threads=1, cpu_channels_last=True)
    out = tmp_path / "sub.csv"
    result = _invoke("submit", "--run", run, "--out", out, "--postprocess", "none", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert seen == [(1, True)]
    for case, mask in submitted_masks(out, tiny_store).items():
        np.testing.assert_array_equal(mask, expected_mask(tiny_store, case, [1], "hflip"))


def test_submit_ensemble_averages_every_run(tiny_store, fake_models, tmp_path):
    runs = [make_fake_run(tmp_path, tiny_store, f"r{seed}", seed=seed) for seed in (1, 2, 3)]
    out = tmp_path / "ens.csv"
    args = [a for run in runs for a in ("--run", run)]
    result = _invoke("submit", *args, "--out", out, "--tta", "hflip", "--postprocess", "none", "--device", "cpu")
    assert result.exit_code == 0, result.output
    for case, mask in submitted_masks(out, tiny_store).items():
        want = expected_mask(tiny_store, case, [1, 2, 3], "hflip")
        for fewer in ([1], [1, 2], [2, 3]):  # dropping any run changes the answer
            assert not np.array_equal(want, expected_mask(tiny_store, case, fewer, "hflip"))
        np.testing.assert_array_equal(mask, want, err_msg=f"case {case}")


def test_submit_weights_the_ensemble_as_told_and_records_the_weights(tiny_store, fake_models, tmp_path):
    runs = [make_fake_run(tmp_path, tiny_store, f"r{seed}", seed=seed) for seed in (1, 2)]
    out = tmp_path / "weighted.csv"
    args = ["--run", runs[0], "--run", runs[1], "--out", out, "--tta", "hflip", "--postprocess", "none", "--device", "cpu"]
    result = _invoke("submit", *args, "--weights", "3, 1")
    assert result.exit_code == 0, result.output
    assert f"ensemble weights: {runs[0]} 0.75, {runs[1]} 0.25" in result.output
    assert "2 runs, weighted, tta hflip" in result.output
    for case, mask in submitted_masks(out, tiny_store).items():
        want = expected_mask(tiny_store, case, [1, 2], "hflip", weights=[0.75, 0.25])
        assert not np.array_equal(want, expected_mask(tiny_store, case, [1, 2], "hflip"))  # not the plain mean
        np.testing.assert_array_equal(mask, want, err_msg=f"case {case}")
    record = json.loads((runs[1] / "submissions.jsonl").read_text())
    assert record["weights"] == [0.75, 0.25]
    for bad, message in (("3", "--weights gives 1 weight for 2 --runs"), ("3,x", "--weights takes comma-separated numbers"),
                         ("3,0", "each weight must be a number above 0")):
        result = _invoke("submit", *args, "--weights", bad)
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


def test_submit_applies_the_post_processing(tiny_store, fake_models, tmp_path):
    run = make_fake_run(tmp_path, tiny_store, "fake", seed=1)
    out, masks_dir = tmp_path / "sub.csv", tmp_path / "masks"
    result = _invoke("submit", "--run", run, "--out", out, "--tta", "none", "--postprocess", "largest",
                     "--device", "cpu", "--save-masks", masks_dir)
    assert result.exit_code == 0, result.output
    for case, mask in submitted_masks(out, tiny_store).items():
        raw = expected_mask(tiny_store, case, [1], "none")
        want = largest_component(raw)
        assert np.count_nonzero(raw & ~want) > 0  # the clean-up removes something
        np.testing.assert_array_equal(mask, want, err_msg=f"case {case}")
        saved = np.asanyarray(nib.load(str(masks_dir / f"{case}.nii.gz")).dataobj).astype(bool)
        np.testing.assert_array_equal(saved, want, err_msg=f"saved mask of case {case}")
    record = json.loads((run / "submissions.jsonl").read_text())
    assert record["post"] == "largest" and record["tta"] == "none"


def test_an_interrupted_submit_leaves_the_masks_folder_as_it_was_and_a_rerun_fills_it(tiny_store, fake_models,
                                                                                      tmp_path, monkeypatch):
    """`submit --save-masks DIR` stopped after its first case (Ctrl-C) left that case's mask in DIR, and no
    CSV: a folder that looked like a result. The masks are written beside DIR and moved in at the end now."""
    from liverctl.infer import submit

    run = make_fake_run(tmp_path, tiny_store, "fake", seed=1)
    out, masks_dir = tmp_path / "sub.csv", tmp_path / "masks"
    masks_dir.mkdir()
    (masks_dir / "mine.txt").write_text("the user's own file")
    real_save, saved = submit.save_mask_nifti, []

    def save_then_stop(mask, meta, target):
        real_save(mask, meta, target)
        saved.append(target)
        raise KeyboardInterrupt

    monkeypatch.setattr(submit, "save_mask_nifti", save_then_stop)
    args = ["submit", "--run", run, "--out", out, "--tta", "none", "--postprocess", "none", "--device", "cpu",
            "--save-masks", masks_dir]
    result = _invoke(*args)
    assert result.exit_code == 130 and len(saved) == 1 and saved[0].parent != masks_dir
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".masks")) == []  # nothing left beside
    assert sorted(p.name for p in masks_dir.iterdir()) == ["mine.txt"] and not out.exists()

    monkeypatch.setattr(submit, "save_mask_nifti", real_save)
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in masks_dir.iterdir()) == sorted(
        ["mine.txt", *(f"{case}.nii.gz" for case in _test_ids(tiny_store))])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".masks")]
    result = _invoke("submit", "--run", run, "--out", out, "--save-masks", out)  # a file where the folder would be
    assert result.exit_code == 2 and "exists and is not a folder; --save-masks takes a folder" in result.stderr


def test_submit_auto_scores_the_validation_cases(tiny_store, fake_models, tmp_path):
    from liverctl.data.store import LiverStore

    store = LiverStore.open(tiny_store)
    val = [c for c, fold in store.folds().items() if fold == 0]  # data.fold = 0, max_val_cases = 0
    others = [c for c in store.case_ids("train") if c not in val]
    assert val and others
    labels = {c: store.read_label_volume(c) > 0 for c in store.case_ids("train")}

    def scores(cases: list[str]) -> dict[str, float]:
        raws = {c: expected_mask(tiny_store, c, [1], "none") for c in cases}
        return {"none": float(np.mean([dice(raws[c], labels[c]) for c in cases])),
                "largest": float(np.mean([dice(largest_component(raws[c]), labels[c]) for c in cases]))}

    want = scores(val)
    assert want != pytest.approx(scores(others)) and want != pytest.approx(scores(sorted(store.case_ids("train"))))

    run = make_fake_run(tmp_path, tiny_store, "fake", seed=1)
    out = tmp_path / "sub.csv"
    result = _invoke("submit", "--run", run, "--out", out, "--tta", "none", "--postprocess", "auto", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert f"volume Dice on {len(val)} validation case{'s' if len(val) != 1 else ''}:" in result.output
    assert "records no training cases (written before liverctl recorded them)" in result.output  # an old run
    record = json.loads((run / "submissions.jsonl").read_text())
    assert record["post_requested"] == "auto"
    for spec, value in want.items():
        assert record["auto_scores"][spec] == pytest.approx(value, abs=1e-12), spec
    # and the spec auto chose is the one the test masks went through
    chosen = record["post"]
    assert chosen in record["auto_scores"]
    for case, mask in submitted_masks(out, tiny_store).items():
        raw = expected_mask(tiny_store, case, [1], "none")
        want_mask = {"none": raw, "largest": largest_component(raw)}.get(chosen)
        if want_mask is not None:
            np.testing.assert_array_equal(mask, want_mask, err_msg=f"case {case}, post {chosen}")


def test_submit_auto_refuses_to_score_a_run_on_cases_it_trained_on(tiny_store, fake_models, tmp_path):
    """A store re-ingested with other folds: auto chose the clean-up on cases the run had trained on."""
    from liverctl.data.store import LiverStore

    folds = LiverStore.open(tiny_store).folds()
    val = sorted(c for c, f in folds.items() if f == 0)
    others = sorted(c for c, f in folds.items() if f != 0)
    run = make_fake_run(tmp_path, tiny_store, "fake", seed=1, cases={"training": [*others, val[0]], "validation": val[1:]})
    out = tmp_path / "sub.csv"
    result = _invoke("submit", "--run", run, "--out", out, "--tta", "none", "--postprocess", "auto", "--device", "cpu")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"{run / 'checkpoints' / 'best.pt'}: refused to score the run on store" in result.stderr
    assert f"cases the run trained on ({val[0]})" in result.stderr
    assert not out.exists() and not (run / "submissions.jsonl").exists()
    kept = make_fake_run(tmp_path, tiny_store, "kept", seed=1, cases={"training": others, "validation": val})
    result = _invoke("submit", "--run", kept, "--out", out, "--tta", "none", "--postprocess", "auto", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "records no training cases" not in result.output


def dice_by_hand(masks: dict[str, np.ndarray], labels_dir: Path) -> dict[str, float]:
    """The three Dice figures of DESIGN.md, from masks and label files, by hand (an empty pair scores 1)."""

    def d(a, b):
        total = np.count_nonzero(a) + np.count_nonzero(b)
        return 1.0 if total == 0 else 2.0 * np.count_nonzero(a & b) / total

    labels = {c: np.asanyarray(nib.load(str(labels_dir / f"segmentation-{c}.nii.gz")).dataobj) > 0 for c in masks}
    return {
        "volume_dice": float(np.mean([d(masks[c], labels[c]) for c in masks])),
        "slice_dice": float(np.mean([d(masks[c][..., z], labels[c][..., z]) for c in masks
                                     for z in range(masks[c].shape[2])])),
        "global_dice": d(np.concatenate([masks[c].ravel() for c in masks]),
                         np.concatenate([labels[c].ravel() for c in masks])),
    }


def test_evaluate_gives_the_exact_dice_of_a_submission(tiny_store, tiny_dataset, fake_models, tmp_path):
    """Masks that are neither empty nor full nor symmetric, so any slip in the scoring shows."""
    run = make_fake_run(tmp_path, tiny_store, "fake", seed=1, gain=6.0)  # the step (liver-bright voxels) dominates
    out = tmp_path / "sub.csv"
    result = _invoke("submit", "--run", run, "--out", out, "--tta", "none", "--postprocess", "none", "--device", "cpu")
    assert result.exit_code == 0, result.output
    result = _invoke("evaluate", out, "--labels", tiny_dataset / "test_labels", "--json", "-")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    masks = submitted_masks(out, tiny_store)
    want = dice_by_hand(masks, tiny_dataset / "test_labels")
    flipped = dice_by_hand({c: m[::-1] for c, m in masks.items()}, tiny_dataset / "test_labels")
    assert all(abs(want[k] - flipped[k]) > 1e-3 for k in want)  # orientation matters for these masks
    for key in ("volume_dice", "slice_dice", "global_dice"):
        assert scores[key] == pytest.approx(want[key], abs=1e-12), key
    by_case = {c["case"]: c["volume_dice"] for c in scores["cases"]}
    assert by_case == pytest.approx({c: dice_by_hand({c: m}, tiny_dataset / "test_labels")["volume_dice"]
                                     for c, m in masks.items()}, abs=1e-12)


def test_an_out_that_cannot_be_the_csv_is_refused_before_any_prediction(template_runs, tmp_path, monkeypatch):
    import liverctl.infer.submit

    def no_prediction(*args, **kwargs):
        raise AssertionError("predicted before checking --out")

    monkeypatch.setattr(liverctl.infer.submit, "predict_cases", no_prediction)
    monkeypatch.setattr(liverctl.infer.predict, "load_run_models", no_prediction)
    run = template_runs["c1"]
    folder = tmp_path / "a folder"
    folder.mkdir()
    result = _invoke("submit", "--run", run, "--out", folder)
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {folder}: is a folder; --out takes the CSV's file name, e.g. submission.csv"
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    result = _invoke("submit", "--run", run, "--out", blocker / "sub" / "s.csv")
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: {blocker / 'sub' / 's.csv'}: cannot write the submission there: "
                                     f"{blocker} is not a folder")
    assert list(folder.iterdir()) == [] and blocker.read_text() == "x"


def test_an_unwritable_out_folder_is_refused_up_front(template_runs, tmp_path, monkeypatch):
    import errno
    import tempfile

    import liverctl.infer.submit

    def read_only(*args, **kwargs):  # what a read-only mount answers (chmod does not stop root)
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    monkeypatch.setattr(liverctl.infer.predict, "load_run_models", lambda *a, **k: pytest.fail("loaded models first"))
    result = _invoke("submit", "--run", template_runs["c1"], "--out", tmp_path / "s.csv")
    assert result.exit_code == 2
    # what to do next: on Kaggle, /kaggle/input is read-only and /kaggle/working is not
    assert result.output.strip() == (f"error: {tmp_path / 's.csv'}: cannot write the submission in {tmp_path}: "
                                     "Read-only file system; give --out a file in a folder you can write to")


def test_an_unwritable_masks_folder_is_refused_up_front(template_runs, tmp_path, monkeypatch):
    """`submit --save-masks ../input/masks` (a read-only mount) failed only once the models were loaded."""
    import errno
    import tempfile

    import liverctl.infer.submit

    masks, real = tmp_path / "input" / "masks", tempfile.TemporaryFile
    masks.mkdir(parents=True)

    def read_only_there(*args, dir=None, **kwargs):  # the mount answers EROFS, to root too
        if Path(dir) == masks:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only_there)
    monkeypatch.setattr(liverctl.infer.predict, "load_run_models", lambda *a, **k: pytest.fail("loaded models first"))
    result = _invoke("submit", "--run", template_runs["c1"], "--out", tmp_path / "s.csv", "--save-masks", masks)
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: {masks}: cannot write the NIfTI masks in {masks}: Read-only file system; "
                                     "give --save-masks a folder you can write to")
    assert not (tmp_path / "s.csv").exists()


def test_a_sample_that_is_not_utf8_is_one_line(template_runs, tmp_path):
    sample = tmp_path / "sample.csv"
    sample.write_bytes("id,rle\ncase_0,1 0 \xe9\n".encode("latin-1"))
    out = tmp_path / "s.csv"
    result = _invoke("submit", "--run", template_runs["c1"], "--out", out, "--sample", sample)
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: {sample}: sample submission is not UTF-8 text (byte 18 is 0xe9); "
                                     "save it as UTF-8 CSV")
    assert not out.exists()


def test_a_full_disk_while_writing_the_csv_leaves_no_file(template_runs, tmp_path, monkeypatch):
    import errno
    import os

    from liverctl import files

    real_fsync = files.os.fsync

    def fsync(fd):
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
    out = tmp_path / "out" / "s.csv"
    result = _invoke("submit", "--run", copy_run(template_runs["c1"], tmp_path, "r"), "--out", out)
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"error: {out}: no space left on ") and line.endswith("while writing the submission CSV")
    assert list(out.parent.iterdir()) == []


def test_a_read_only_run_folder_still_gives_the_submission(template_runs, tmp_path, monkeypatch):
    """A run attached on Kaggle sits in /kaggle/input, read-only: the CSV was written and checked, then submit
    ended in 'error: ...submissions.jsonl: the CSV is written, but recording it in the run failed', exit 2.
    The record only feeds `liverctl runs`: now a note says it is missing, exit 0."""
    import builtins
    import errno

    import liverctl.runs.submissions

    run = copy_run(template_runs["c1"], tmp_path, "attached")

    def read_only_runs(path, *args, **kwargs):  # what a read-only mount answers (chmod does not stop root)
        if Path(path).name == "submissions.jsonl":
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(liverctl.runs.submissions, "open", read_only_runs, raising=False)
    out = tmp_path / "s.csv"
    result = _invoke("submit", "--run", run, "--out", out, "--tta", "none", "--postprocess", "none")
    assert result.exit_code == 0, result.output
    assert out.is_file() and not (run / "submissions.jsonl").exists()
    assert (f"note: {run / 'submissions.jsonl'}: not recorded (Read-only file system); `liverctl runs` will not "
            "show this submission's score for the run") in result.output.splitlines()
    assert "error" not in result.output


def test_a_sample_with_more_ids_than_the_store_has_test_slices_is_read_no_further(tiny_store, template_runs, tmp_path):
    """A sample of 8.7M unique ids took 1.2 GB and 26 s to read (every id held, then compared with the store's
    slices) though the store says how many test slices there are. Now the store is opened first and the read
    stops at the first id beyond them: one line naming the file and both counts (the bytes after it are never
    decoded: here they are not UTF-8)."""
    shapes = _test_ids(tiny_store)
    ids = [f"{c}_{z}" for c, shape in shapes.items() for z in range(shape[2])]
    sample = tmp_path / "sample.csv"
    more = b"".join(b"extra_%d,1 0\n" % z for z in range(100_000))  # 1.3 MB, more than the reader reads at a time
    sample.write_bytes(b"id,rle\n" + "".join(f"{i},1 0\n" for i in ids).encode() + more + b"\xff,1 0\n")
    out = tmp_path / "sub.csv"
    result = _invoke("submit", "--run", template_runs["c1"], "--out", out, "--sample", sample)
    assert result.exit_code != 0
    (line,) = result.output.strip().splitlines()
    assert line == (f"error: {sample}: line {len(ids) + 2}: sample submission has more ids than the store has test "
                    f"slices: {len(ids) + 1} ids by this line (read no further), {len(ids)} test slices in "
                    f"{len(shapes)} test cases; is this the right store?")
    assert not out.exists()


def test_a_record_after_a_torn_last_line_goes_on_a_line_of_its_own(tmp_path):
    """A submit killed while it appended left a torn last line in submissions.jsonl; the next record was
    appended onto it, and both were one unreadable line (`liverctl runs` lost that submission)."""
    from liverctl.infer.submit import record_submission

    run = tmp_path / "run"
    run.mkdir()
    (run / "submissions.jsonl").write_text('{"csv": "a.csv", "ts": 1}\n{"csv": "b.cs')
    record_submission([run], {"csv": "c.csv", "ts": 3})
    record_submission([run], {"csv": "d.csv", "ts": 4})
    lines = (run / "submissions.jsonl").read_text().split("\n")
    assert lines == ['{"csv": "a.csv", "ts": 1}', '{"csv": "b.cs', '{"csv": "c.csv", "ts": 3}',
                     '{"csv": "d.csv", "ts": 4}', ""]
    (tmp_path / "new").mkdir()  # a first record: no newline put before it
    record_submission([tmp_path / "new"], {"csv": "e.csv"})
    assert (tmp_path / "new" / "submissions.jsonl").read_text() == '{"csv": "e.csv"}\n'


def test_a_hard_linked_copy_of_a_run_attached_read_only_still_gives_the_submission(tmp_path, monkeypatch):
    """A hard-linked copy of a run (cp -al) attached read-only (a Docker `:ro` volume, /kaggle/input): its
    submissions.jsonl has two names, so appending first copies it into a file of its own (unshare_hard_link),
    which a read-only folder refuses as a LiverctlError, not an OSError: submit ended in 'error: ...: cannot write
    submissions.jsonl: Read-only file system', exit 2, after the CSV was written. It is the read-only note again,
    and the original run's file is left as it was."""
    import builtins
    import errno

    import liverctl.files
    import liverctl.runs.submissions
    from liverctl.infer.submit import record_submission

    base, copy = tmp_path / "base", tmp_path / "copy"
    base.mkdir()
    copy.mkdir()
    (base / "submissions.jsonl").write_text('{"csv": "base.csv"}\n')
    os.link(base / "submissions.jsonl", copy / "submissions.jsonl")

    def read_only_copy(path, mode="r", *args, **kwargs):  # what a read-only mount answers (chmod does not stop root)
        if Path(path).parent == copy and mode not in ("r", "rb"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(liverctl.files, "open", read_only_copy, raising=False)
    monkeypatch.setattr(liverctl.runs.submissions, "open", read_only_copy, raising=False)
    notes = []
    record_submission([copy], {"csv": "copy.csv"}, note=notes.append)
    assert notes == [f"note: {copy / 'submissions.jsonl'}: not recorded (Read-only file system); `liverctl runs` "
                     "will not show this submission's score for the run"]
    assert (base / "submissions.jsonl").read_text() == '{"csv": "base.csv"}\n'


def test_a_submit_killed_between_its_csv_and_its_record_loses_no_submission(template_runs, tmp_path, monkeypatch):
    """A submit killed after renaming its CSV into place and before appending its line to submissions.jsonl left a
    whole submission that `liverctl runs` never listed. Now its line waits in a journal in the run folder from
    just before the rename: `runs` lists the submission once its submit is gone, and the next submit records it.
    The kill point is simulated: recording ends the command, and the submit's process counts as gone."""
    import liverctl.files
    import liverctl.infer.submit

    def killed(*args, **kwargs):
        raise SystemExit(137)  # as a SIGKILL reads

    run = copy_run(template_runs["c1"], tmp_path, "tiny")
    first = tmp_path / "first.csv"
    monkeypatch.setattr(liverctl.infer.submit, "record_submission", killed)
    assert _invoke("submit", "--run", run, "--out", first, "--tta", "none").exit_code != 0
    assert first.is_file() and not (run / "submissions.jsonl").exists()
    monkeypatch.setattr(liverctl.files, "process_gone", lambda pid: True, raising=False)
    assert [Path(s["csv"]) for s in summarize_run(run).submissions] == [first]
    monkeypatch.undo()
    monkeypatch.setattr(liverctl.files, "process_gone", lambda pid: True, raising=False)
    second = tmp_path / "second.csv"
    assert _invoke("submit", "--run", run, "--out", second, "--tta", "none").exit_code == 0
    records = [json.loads(line) for line in (run / "submissions.jsonl").read_text().splitlines()]
    assert [(r["csv"], r["sha256"]) for r in records] == [(str(first), file_sha256(first)),
                                                          (str(second), file_sha256(second))]
    assert [Path(s["csv"]) for s in summarize_run(run).submissions] == [first, second]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "submissions.jsonl"]


def test_a_submit_killed_before_its_csv_took_its_place_is_not_recorded(tmp_path, monkeypatch):
    """The journal of a submit killed before its rename names a CSV that is not in place (another file, or
    none): neither `runs` nor the next record takes it for a submission, and the next record removes it."""
    import liverctl.files
    from liverctl.infer.submit import record_submission
    from liverctl.runs.submissions import write_pending

    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "old.csv").write_text("id,rle\n")
    os.mkfifo(tmp_path / "fifo.csv")  # a journal from someone else's run folder naming a FIFO (or /dev/zero)
    for pid, csv_name in ((11, "old.csv"), (12, "never.csv"), (13, "fifo.csv"), (14, "/dev/zero")):
        (run / f".submission.{pid}.pending").write_text(json.dumps({"csv": str(tmp_path / csv_name),
                                                                     "sha256": "0" * 64}) + "\n")
    monkeypatch.setattr(liverctl.files, "process_gone", lambda pid: pid != 12)  # 12 still runs
    assert summarize_run(run).submissions == []  # neither hashed: a FIFO's read waited for a writer forever
    write_pending([run], {"csv": "c.csv", "ts": 3})
    record_submission([run], {"csv": "c.csv", "ts": 3})
    assert (run / "submissions.jsonl").read_text() == '{"csv": "c.csv", "ts": 3}\n'
    assert sorted(p.name for p in run.iterdir()) == [".submission.12.pending", "submissions.jsonl"]


def test_a_min_size_larger_than_a_test_volume_is_refused_before_predicting(tiny_store, template_runs, tmp_path,
                                                                           monkeypatch):
    """`submit --postprocess min-size:N` with N above a test volume's voxel count (a zero too many) dropped every
    component: an empty mask for every such case, exit 0. Now one line naming the case, before any prediction."""
    shapes = _test_ids(tiny_store)
    case, voxels = min(((c, int(np.prod(s))) for c, s in shapes.items()), key=lambda item: item[1])
    import liverctl.infer.submit

    predicted = []
    real_predict = liverctl.infer.submit.predict_cases
    monkeypatch.setattr(liverctl.infer.submit, "predict_cases",
                        lambda *a, **k: predicted.append(1) or real_predict(*a, **k))
    out = tmp_path / "sub.csv"
    result = _invoke("submit", "--run", template_runs["c1"], "--out", out, "--tta", "none", "--device", "cpu",
                     "--postprocess", f"largest+min-size:{voxels + 1}")
    (line,) = result.output.strip().splitlines()
    assert result.exit_code == 2 and line == (
        f"error: post-processing 'largest+min-size:{voxels + 1}' drops components of fewer than {voxels + 1:,} voxels, "
        f"more than the whole volume of test case {case!r} holds ({voxels:,}): its mask would be empty whatever it "
        "holds; give a smaller min-size"), result.output
    assert not out.exists() and not predicted


def test_a_store_holding_none_of_the_cases_the_run_trained_on_is_noted(tiny_store, template_runs, tmp_path):
    """From another project's folder the run's relative data.store names that folder's own store, whose test cases
    were predicted without a word: where the store holds none of the cases the run's checkpoint records it
    trained on, submit says so (and still predicts: --store is how to choose)."""
    from liverctl.data.store import LiverStore
    from liverctl.runs.checkpoint import load_checkpoint, save_checkpoint

    def trained_on(run, training):
        state = load_checkpoint(run / "checkpoints" / "best.pt")
        state["cases"] = {"training": training, "validation": []}
        state.pop("format")
        save_checkpoint(run, "best", state)

    run = copy_run(template_runs["c1"], tmp_path, "other")
    trained_on(run, LiverStore.open(tiny_store).case_ids("train")[1:])  # this store's cases
    result = _invoke("submit", "--run", run, "--out", tmp_path / "s.csv")
    assert result.exit_code == 0 and "holds none of" not in result.output, result.output
    trained_on(run, ["a1", "a2"])  # another project's cases
    result = _invoke("submit", "--run", run, "--out", tmp_path / "t.csv")
    assert result.exit_code == 0 and (tmp_path / "t.csv").exists(), result.output
    assert f"note: {tiny_store} holds none of the 2 cases run other trained on: it is not the store the run was " \
           "trained on" in " ".join(result.output.split()), result.output
    result = _invoke("submit", "--run", run, "--out", tmp_path / "u.csv", "--store", tiny_store)
    assert result.exit_code == 0 and "holds none of" not in result.output  # the store chosen: nothing to say


def test_a_cases_probabilities_are_let_go_before_its_mask_is_cleaned_and_encoded():
    """submit thresholds a case's float32 probabilities, then cleans and encodes the mask (the encoder and its
    self-check take several bool volumes more); the probabilities are gone by then (a 512 x 512 x 900 case: 0.94 GB
    held through all of that before)."""
    import tracemalloc
    from types import SimpleNamespace

    from liverctl.infer.postprocess import parse_postprocess
    from liverctl.infer.submit import predict_test_cases

    shape = (96, 96, 40)

    class Predictor:
        settings = SimpleNamespace(threshold=0.5)
        store = SimpleNamespace(meta=lambda case: {"shape": list(shape)})

        def predict(self, case_ids):
            for case in case_ids:
                yield case, np.full(shape, 0.75, np.float32)

    held = {}

    class Writer:
        expected = {"a": shape[2]}

        def add_case(self, case, mask):
            held[case] = tracemalloc.get_traced_memory()[0] - base
            assert mask.all()

        def close(self, before_rename=None):
            return "closed"

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        assert predict_test_cases(Predictor(), parse_postprocess("none"), Writer()) == "closed"
    finally:
        tracemalloc.stop()
    probs_bytes = 4 * int(np.prod(shape))
    assert held["a"] < 0.5 * probs_bytes  # the bool mask (a quarter) and small change


def test_a_copy_of_a_run_in_the_ensemble_is_refused(tiny_store, fake_models, tmp_path):
    """`cp -r runs/a runs/b`, then `submit --run a --run b`: two members of one model, weighed twice in the mean
    without a word (the same folder given twice was refused). The checkpoints' bytes (hashed as they are loaded)
    now tell a copy, and nothing is written."""
    import shutil

    run = make_fake_run(tmp_path, tiny_store, "r1", seed=1)
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    out = tmp_path / "twice.csv"
    result = _invoke("submit", "--run", run, "--run", copy, "--out", out, "--device", "cpu")
    assert result.exit_code == 2, result.output
    best = run / "checkpoints" / "best.pt"
    assert f"{copy / 'checkpoints' / 'best.pt'}: is byte for byte {best} (sha256 " in " ".join(result.output.split())
    assert not out.exists()

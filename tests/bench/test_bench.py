"""`liverctl bench`: the quick run writes every figure, and the rebuilt notebook baseline is faithful."""

from __future__ import annotations

import json
import math
import mmap
import sys

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from liverctl.bench import baseline
from liverctl.bench.report import Figure
from liverctl.bench.timing import ratio, time_interleaved
from liverctl.cli import app

# Every figure issue 6 asks for, by its JSON key.
EXPECTED_FIGURES = {
    "ingest_seconds",  # liverctl ingest vs the notebook's cache build
    "ingest_vs_floor",  # liverctl ingest vs reading and decompressing every source file
    "store_bytes",  # store vs .npy cache, synthetic
    "loader_augmented",  # samples/s with the preset's augmentation
    "loader_read_only",  # samples/s, read path alone
    "train_pipeline_vs_model",  # full pipeline vs model only
    "train_pipeline_vs_baseline",  # full pipeline, liverctl loader vs notebook loader
    "postprocess_seconds",  # cc3d clean-up of one volume
    "rle_seconds",  # RLE of all its slices
    "inference_seconds_per_slice",
    "loader_cpu_per_sample",  # worker CPU per sample, albumentations path, vs the notebook's (issue 12)
    "loader_worker_cpu_device",  # worker CPU per sample, device augmentation path, vs 2.5 ms (issue 12)
    "real_store_bytes",  # store vs .npy cache on the real CT
    "real_window_reads",  # random 3-slice window reads/s on the real CT
}

# issue 12's table: figure -> target on its ratio (liverctl / reference)
ISSUE_12_TARGETS = {
    "loader_cpu_per_sample": "<= 0.5",  # v5 augmentation on the CPU, vs the notebook's
    "loader_worker_cpu_device": "<= 1.0",  # vs the 2.5 ms budget
    "loader_augmented": ">= 3",
    "loader_read_only": ">= 3",
    "ingest_vs_floor": "<= 1.3",
    "inference_seconds_per_slice": "<= 1.0",
    "train_pipeline_vs_model": ">= 0.9",  # judged on a GPU only
}


def _is_positive_number(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_bench_json_holds_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "--quick", "--workdir", str(tmp_path / "work"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "ratio" in result.output  # the table was printed
    report = json.loads(out.read_text())
    assert report["format"] == "liverctl-bench/1"
    assert report["settings"]["repeats"] >= 3
    figures = report["figures"]
    assert set(figures) >= EXPECTED_FIGURES
    for key in EXPECTED_FIGURES:
        fig = figures[key]
        for side in ("liverctl", "baseline", "ratio"):
            value = fig[side]
            if value is None:
                # only a part that could not run may be missing, and the note must say which
                assert (fig["note"] or "").startswith("not available:"), (key, side, fig)
            else:
                assert _is_positive_number(value), (key, side, value)
        if fig["liverctl"] is not None and fig["baseline"] is not None:
            assert fig["ratio"] == pytest.approx(fig["liverctl"] / fig["baseline"])
        for side, seconds in fig["seconds"].items():  # every timed part: the repeats behind its median
            assert len(seconds) >= 3, (key, side)
        if fig["target"] is not None and fig["ratio"] is not None and key != "train_pipeline_vs_model":
            assert isinstance(fig["target_met"], bool), key
            assert fig["verdict"] == ("met" if fig["target_met"] else "MISSED"), (key, fig["verdict"])
    for key, target in ISSUE_12_TARGETS.items():  # every target of issue 12 is judged, with its verdict
        assert figures[key]["target"] == target, (key, figures[key]["target"])
        assert figures[key]["verdict"] is not None, key
    if report["machine"]["device"] == "cpu":
        assert figures["train_pipeline_vs_model"]["verdict"] == "not measured: no GPU"
        assert figures["train_pipeline_vs_model"]["target_met"] is None
    breakdown = report["profiles"]["loader_cpu_ms_per_sample"]  # where the loaders' time goes
    assert set(breakdown) == {"liverctl", "baseline"}, breakdown
    epochs = report["profiles"]["loader_epoch_cpu_ms_per_sample"]  # CPU of whole epochs, workers included
    assert set(epochs) == {"loader_augmented", "loader_read_only"}, epochs
    for parts in epochs.values():
        assert parts["baseline main"] > 0 and parts["liverctl main"] > 0, parts
        if sys.platform.startswith("linux"):  # the workers' clocks come from /proc, in 10 ms ticks:
            # a quick run's epochs may cost the workers less than one tick, so only the sum is checked
            assert parts["liverctl workers"] >= 0, parts
            assert parts["liverctl total"] >= parts["liverctl main"], parts
    warm = report["profiles"]["loader_warm_up"]  # liverctl's untimed epochs before the timed ones
    assert set(warm) == {"loader_augmented", "loader_read_only"}, warm
    for parts in warm.values():
        assert 1 <= parts["epochs"] == len(parts["seconds"]), parts
    # The synthetic figures need only liverctl's own modules: all of them must be there.
    for key in EXPECTED_FIGURES - {"real_store_bytes", "real_window_reads"}:
        assert figures[key]["liverctl"] is not None, (key, figures[key]["note"])


def test_bench_only_runs_the_parts_asked_for(tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "--quick", "--only", "submit", "--workdir", str(tmp_path / "work"), "--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report["figures"]) == {"postprocess_seconds", "rle_seconds", "inference_seconds_per_slice"}
    assert report["figures"]["inference_seconds_per_slice"]["liverctl"] is not None  # the store was built
    assert list(report["stage_seconds"]) == ["submit"]
    bad = CliRunner().invoke(app, ["bench", "--quick", "--only", "loader,gpu", "--workdir", str(tmp_path)])
    assert bad.exit_code == 2 and "choose from ingest,loader,training,submit,real" in bad.output


def test_bench_json_dash_is_the_figures_alone_on_stdout(tmp_path, monkeypatch):
    """`--json -` as with `evaluate`: stdout is the JSON (for a pipe), the table goes to stderr; no file '-'."""
    monkeypatch.chdir(tmp_path)
    args = ["bench", "--quick", "--only", "submit", "--no-real", "--workdir", "work", "--json", "-"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["figures"]) == {"postprocess_seconds", "rle_seconds",
                                                         "inference_seconds_per_slice"}
    assert "ratio" in result.stderr
    assert not (tmp_path / "-").exists()


def test_bench_rejects_a_size_the_model_cannot_take(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--quick", "--size", "50", "--workdir", str(tmp_path)])
    assert result.exit_code == 2
    assert "multiple of 32" in result.output
    assert "Traceback" not in result.output


def _write_case(folder, name: str, hu: np.ndarray, label: np.ndarray):
    folder.mkdir(parents=True, exist_ok=True)
    vol, seg = folder / f"volume-{name}.nii.gz", folder / f"segmentation-{name}.nii.gz"
    nib.save(nib.Nifti1Image(hu.astype(np.int16), np.eye(4)), vol)
    nib.save(nib.Nifti1Image(label.astype(np.uint8), np.eye(4)), seg)
    return vol, seg


def test_notebook_cache_is_one_windowed_float16_file_per_slice(tmp_path):
    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 1000, size=(32, 24, 5))
    label = np.zeros((32, 24, 5), dtype=np.uint8)
    label[4:10, 4:10, 1:3] = 2  # 2 is not liver here
    label[10:20, 10:20, 2:4] = 1
    vol, seg = _write_case(tmp_path / "data", "7", hu, label)

    rows = baseline.build_notebook_cache([("7", vol, seg)], tmp_path / "cache", window=(-100, 200), liver_labels=(1,))
    assert [(r.case, r.z, r.depth) for r in rows] == [("7", z, 5) for z in range(5)]
    assert len(list((tmp_path / "cache" / "images").glob("*.npy"))) == 5
    img = np.load(tmp_path / "cache" / "images" / "7_2.npy")
    assert img.dtype == np.float16 and img.shape == (32, 24)
    assert np.allclose(img, np.clip((hu[..., 2] + 100) / 300, 0, 1), atol=1e-3)
    mask = np.load(tmp_path / "cache" / "masks" / "7_2.npy")
    assert np.array_equal(mask, (label[..., 2] == 1).astype(np.uint8))
    assert baseline.load_cache_rows(tmp_path / "cache") == rows

    dataset = baseline.NotebookSliceDataset(tmp_path / "cache", rows, transform=None)
    image, target = dataset[0]
    assert tuple(image.shape) == (3, 32, 24) and tuple(target.shape) == (1, 32, 24)
    first = np.load(tmp_path / "cache" / "images" / "7_0.npy").astype(np.float32)
    assert np.array_equal(image[0].numpy(), first) and np.array_equal(image[1].numpy(), first)  # clamped
    window = baseline.read_cache_window(tmp_path / "cache", rows[4])
    assert np.array_equal(window[2], window[1])  # clamped at the top end too

    augmented = baseline.NotebookSliceDataset(tmp_path / "cache", rows, baseline.notebook_transform(True, 10, 32))
    image, target = augmented[2]
    assert tuple(image.shape) == (3, 32, 32) and tuple(target.shape) == (1, 32, 32)


def test_notebook_rle_agrees_with_liverctl_rle():
    from liverctl.infer.rle import encode

    rng = np.random.default_rng(1)
    for _ in range(5):
        mask = rng.random((16, 12)) > 0.6
        assert baseline.notebook_rle(mask.astype(np.uint8)) == encode(mask)
    assert baseline.notebook_rle(np.zeros((4, 4), dtype=np.uint8)) == ""  # the notebook's empty token


def test_notebook_largest_component_keeps_the_biggest_blob():
    mask = np.zeros((20, 20, 6), dtype=bool)
    mask[1:4, 1:4, 1:3] = True
    mask[8:16, 8:16, 1:5] = True
    kept = baseline.notebook_largest_component(mask)
    assert kept[10, 10, 2] and not kept[2, 2, 2]
    assert not baseline.notebook_largest_component(np.zeros((3, 3, 3), dtype=bool)).any()


class _ColdLoader:
    """A loader whose 'worker' is this process and whose first `cold` epochs touch 1 MB of new memory a
    sample (as a worker's first batch into each shared-memory slot does), later epochs none."""

    def __init__(self, cold: int, workers: bool = True):
        import os
        from types import SimpleNamespace

        self.cold, self.epochs, self.kept = cold, 0, []
        pids = [SimpleNamespace(pid=os.getpid())] if workers else []
        self._iterator = SimpleNamespace(_workers=pids)

    def __iter__(self):
        self.epochs += 1
        for _ in range(4):
            if self.epochs <= self.cold:
                pages = mmap.mmap(-1, 1024 * 1024)  # 256 new pages, whatever malloc has kept
                pages.write(b"\x01" * len(pages))
                self.kept.append(pages)
            yield np.zeros((1, 1)), None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page faults come from /proc")
def test_loader_warm_up_runs_until_the_workers_stop_touching_new_memory():
    from liverctl.bench.loader import WARM_PAGES_PER_SAMPLE, EpochClocks

    loader = _ColdLoader(cold=2)
    warm = EpochClocks().warm_up(loader, None)
    assert warm["epochs"] == loader.epochs == 3, warm
    assert [p >= 200 for p in warm["new pages per sample"]] == [True, True, False], warm
    assert warm["new pages per sample"][-1] < WARM_PAGES_PER_SAMPLE
    never_warm = _ColdLoader(cold=100)
    assert EpochClocks().warm_up(never_warm, None, max_epochs=3)["epochs"] == never_warm.epochs == 3
    no_workers = _ColdLoader(cold=5, workers=False)  # num_workers=0: nothing to warm, one epoch
    assert EpochClocks().warm_up(no_workers, None)["epochs"] == no_workers.epochs == 1


def test_an_epoch_finished_on_a_gpu_is_timed_to_its_last_kernel(monkeypatch):
    """The device augmentation's kernels are queued on a GPU: the loader figure stopped its clock at the last
    batch's launch, leaving out what was still queued (an epoch on the CPU has nothing to wait for)."""
    import torch

    from liverctl.bench.loader import _epoch_samples

    class QueuedOnGpu(list):  # what finish returns on CUDA, as far as the epoch looks at it
        is_cuda, device = True, "cuda:0"

    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    batches = [([0] * 4, None), ([0] * 3, None)]
    assert _epoch_samples(batches, lambda b: (QueuedOnGpu(b[0]), b[1])) == 7
    assert waited == ["cuda:0"]
    waited.clear()
    assert _epoch_samples(batches, None) == 7 and waited == []  # batches on the CPU


def test_time_interleaved_takes_turns_and_leaves_out_the_warmup():
    calls = []
    works = {"a": lambda: calls.append("a") or len(calls), "b": lambda: calls.append("b") or len(calls)}
    timings = time_interleaved(works, 3, setups={"b": lambda: calls.append("setup b")}, warmup=1)
    assert calls == ["a", "setup b", "b"] * 4  # in turns, setup untimed before each run of b
    assert [len(t.seconds) for t in timings.values()] == [3, 3]  # the warm-up round is not counted
    assert timings["b"].result == 12 and timings["a"].median >= 0
    with pytest.raises(ValueError):
        time_interleaved(works, 0)
    assert ratio(None, 1.0) is None and ratio(1.0, 0.0) is None and ratio(3.0, 2.0) == 1.5


def test_figure_target_is_judged_on_the_ratio_in_its_direction():
    faster = Figure("k", "w", "samples/s", "baseline", True, liverctl=4.0, baseline=2.0, target=">= 1.8").settle()
    assert faster.ratio == 2.0 and faster.target_met is True
    bigger = Figure("k", "w", "bytes", "baseline", False, liverctl=7.0, baseline=10.0, target="<= 0.6").settle()
    assert bigger.target_met is False
    assert faster.verdict == "met" and bigger.verdict == "MISSED"
    unjudged = Figure("k", "w", "images/s", "model only", True, liverctl=1.0, baseline=2.0, target=">= 0.9")
    unjudged.settle("no GPU")
    assert unjudged.target_met is None and unjudged.verdict == "not measured: no GPU"
    missing = Figure("k", "w", "s", "baseline", False, baseline=2.0, target="<= 1.0", note="failed: X").settle()
    assert missing.ratio is None and missing.target_met is None and missing.verdict == "not measured: failed: X"
    untargeted = Figure("k", "w", "s", "baseline", False, liverctl=1.0, baseline=2.0).settle()
    assert untargeted.verdict is None and untargeted.target_met is None


def test_bench_refuses_a_json_path_it_cannot_write_before_measuring(tmp_path, monkeypatch):
    """A --json naming a folder failed only after the whole benchmark had run, and its figures were lost."""
    import liverctl.bench.run

    def never(*args, **kwargs):
        raise AssertionError("the benchmark ran")

    monkeypatch.setattr(liverctl.bench.run, "run_bench", never)
    result = CliRunner().invoke(app, ["bench", "--quick", "--workdir", str(tmp_path / "work"), "--json", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "is a folder; --json takes a file name, e.g. bench.json" in result.stderr
    assert "Traceback" not in result.output
    monkeypatch.undo()
    result = CliRunner().invoke(app, ["bench", "--quick", "--size", "0", "--workdir", str(tmp_path)])
    assert result.exit_code == 2 and "--size 0: must be a positive multiple of 32" in result.stderr


def test_bench_real_dir_is_that_folder_or_an_error(tmp_path):
    # a missing --real-dir measured ../shared/data/real in its place (other data than the one asked for), and a
    # folder with no case in it ended in a traceback (ValueError: empty range for randrange())
    missing = CliRunner().invoke(app, ["bench", "--quick", "--only", "real", "--real-dir", str(tmp_path / "nope"),
                                       "--workdir", str(tmp_path / "work")])
    assert missing.exit_code == 2 and "--real-dir" in missing.output and "no such folder" in missing.output
    (tmp_path / "empty" / "notes").mkdir(parents=True)
    out = tmp_path / "bench.json"
    empty = CliRunner().invoke(app, ["bench", "--quick", "--only", "real", "--real-dir", str(tmp_path / "empty"),
                                     "--workdir", str(tmp_path / "work"), "--json", str(out)])
    assert empty.exit_code == 0, empty.output
    figures = json.loads(out.read_text())["figures"]
    for key in ("real_store_bytes", "real_window_reads"):
        assert figures[key]["liverctl"] is None and figures[key]["baseline"] is None
        assert figures[key]["note"].startswith("not available: no case in"), figures[key]

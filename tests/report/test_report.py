"""`liverctl.report.build` and `liverctl report`: pictures exist with the expected pixel size, index.html links them."""

from __future__ import annotations

import errno
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from run_fixtures import make_run
from typer.testing import CliRunner

from liverctl.cli import app
from liverctl.errors import LiverctlError
from liverctl.report.build import CURVES_FIGSIZE, DPI, REPORT_MARKER, default_out_dir, write_report

CURVES_PX = (int(CURVES_FIGSIZE[0] * DPI), int(CURVES_FIGSIZE[1] * DPI))


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture
def two_runs(tmp_path):
    root = tmp_path / "runs"
    a = make_run(root, "a-v3", preset="v3", planned=3)
    b = make_run(root, "b-focal", preset="v5-focal", settings={"loss.name": "dice_focal"}, planned=5,
                 volume_dice=[0.3, 0.5, None], status="nan_abort", nan_events=2, start_ts=1_700_001_000)
    return a, b


def test_one_run_report_has_curves_and_index(two_runs):
    run, _ = two_runs
    result = write_report([run], default_out_dir([run]), overlays=False)
    assert result.out_dir == run / "report"
    curves = result.out_dir / "curves.png"
    assert curves.stat().st_size > 10_000
    assert png_size(curves) == CURVES_PX
    page = result.index_html.read_text(encoding="utf-8")
    assert "src='curves.png'" in page
    assert "a-v3" in page and "[loss]" in page  # the config is shown
    assert "--no-overlays" in page  # says what was skipped
    assert result.images == [curves]


def test_several_runs_share_one_report_with_the_varied_settings(two_runs, tmp_path):
    out = tmp_path / "cmp"
    result = write_report(list(two_runs), out, overlays=False)
    assert png_size(out / "curves.png") == CURVES_PX
    page = result.index_html.read_text(encoding="utf-8")
    assert page.count("<details") == 2
    assert "<th>loss.name</th>" in page and "dice_focal" in page and "nan_abort" in page
    # the NaN guard's actions of b-focal are listed: two skipped steps and one rollback
    assert page.count("<td>b-focal</td><td>nan</td>") == 3 and "skip_step" in page and "rollback" in page
    assert default_out_dir(list(two_runs)) == tmp_path / "reports" / "a-v3+b-focal"


def test_hand_made_runs_without_a_model_still_get_curves_and_say_what_was_skipped(two_runs, tmp_path):
    result = write_report(list(two_runs), tmp_path / "r", overlays=True)
    assert png_size(result.out_dir / "curves.png") == CURVES_PX
    assert {s.split(":")[0] for s in result.skipped} == {"a-v3", "b-focal"} and result.refused == []
    page = result.index_html.read_text(encoding="utf-8")
    assert "Skipped" in page and "case_dice.png" not in page


def test_run_with_no_events_and_damaged_log_renders(tmp_path):
    empty = tmp_path / "runs" / "empty"
    empty.mkdir(parents=True)
    (empty / "config.toml").write_text("[loss]\nname = 'dice'\n", encoding="utf-8")
    torn = make_run(tmp_path / "runs", "torn", status=None, truncated=True, checkpoint=False)
    result = write_report([empty, torn], tmp_path / "out", overlays=False)
    assert png_size(result.out_dir / "curves.png") == CURVES_PX
    page = result.index_html.read_text(encoding="utf-8")
    assert "no events.jsonl" in page and "no checkpoint" in page


def test_an_unreadable_event_log_is_a_problem_of_its_run_not_the_end_of_the_report(two_runs, tmp_path):
    """A folder where events.jsonl should be ended `report` in an IsADirectoryError traceback (`runs` already
    said "events.jsonl unreadable"); now that run's line says so and the other runs are reported."""
    broken = make_run(tmp_path / "runs", "broken", checkpoint=False)
    (broken / "events.jsonl").unlink()
    (broken / "events.jsonl").mkdir()
    result = CliRunner().invoke(app, ["report", "a-v3", "broken", "b-focal", "--runs-dir", str(tmp_path / "runs"),
                                 "--out", str(tmp_path / "out"), "--no-overlays"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert "events.jsonl unreadable" in page and "a-v3" in page and "b-focal" in page
    assert png_size(tmp_path / "out" / "curves.png") == CURVES_PX


def test_absurd_numbers_in_a_log_are_left_off_the_curves(tmp_path):
    """A loss and a Dice of 1e308 in someone's events.jsonl made matplotlib overflow (a RuntimeWarning on the
    terminal, every other point squashed onto the axis); they are gaps now, as in `watch`."""
    import warnings

    from watch_fixtures import EventScript

    s = EventScript("absurd")
    s.start(epochs=2)
    for step in range(1, 5):
        s.add("step", after=1, epoch=0, step=step, loss=1e308 if step == 2 else 0.5, lr=1e-3)
    s.epoch(0, step=4, volume_dice=1e308, val_loss=-1e308, is_best=True)
    s.epoch(1, step=4, volume_dice=0.6, is_best=True)
    run = s.write(tmp_path / "runs" / "absurd" / "events.jsonl").parent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = write_report([run], tmp_path / "out", overlays=False)
    assert png_size(result.out_dir / "curves.png") == CURVES_PX


def test_a_run_without_step_events_says_so_in_its_step_panels_not_an_empty_axis(tmp_path, monkeypatch):
    """The demo preset on the three real CT volumes (fold 2: one training step per epoch, 3 epochs) logged no
    step event (train.log_every = 5): curves.png's loss-per-step and learning-rate panels were empty axes
    running -0.04 .. 0.04, and their 'no events' note never showed (each panel held a line, with no points)."""
    from watch_fixtures import EventScript

    import liverctl.report.plots as plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    s = EventScript("r1")
    s.start(epochs=3)
    for epoch in (1, 2, 3):
        s.epoch(epoch, step=epoch, volume_dice=0.07, train_loss=0.8, val_loss=0.54, is_best=epoch == 1)
    run = s.write(tmp_path / "runs" / "r1" / "events.jsonl").parent
    write_report([run], tmp_path / "out", overlays=False)
    ax_loss, ax_dice, ax_lr, ax_epoch = figures[0].axes

    def note(ax):
        return [t.get_text() for t in ax.texts]

    for ax in (ax_loss, ax_lr):
        assert note(ax) == [plots.NO_STEPS]
        assert list(ax.get_yticks()) == []  # no made-up scale around nothing
    assert note(ax_dice) == note(ax_epoch) == []
    assert list(ax_dice.get_lines()[0].get_xdata()) == [1, 2, 3]
    assert [t.get_text() for t in ax_dice.get_legend().get_texts()] == ["r1", "volume Dice", "slice Dice",
                                                                         "global Dice"]  # was 'volume dice'


def test_an_epoch_done_again_after_a_resume_is_one_point_on_the_curves(tmp_path, monkeypatch):
    """Killed between best.pt and last.pt, a run redoes that epoch on resume: the curves show its last
    figures once, as `watch`'s table does, not a second point above the same epoch."""
    from watch_fixtures import EventScript

    import liverctl.report.plots as plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    s = EventScript("resumed")
    s.start(epochs=3)
    s.add("step", step=5, loss=0.9, lr=1e-4)
    s.epoch(1, volume_dice=0.70, is_best=True)
    s.add("step", step=15, loss=0.7, lr=1e-4)  # steps 11-20 are done again after the resume
    s.epoch(2, volume_dice=0.80, is_best=True)  # best.pt written, then killed before last.pt
    s.add("run_start", after=600, config={"train": {"epochs": 3}}, epoch=1, step=10)
    s.add("step", step=15, loss=0.6, lr=1e-4)
    s.epoch(2, volume_dice=0.78, is_best=True)
    s.add("step", step=25, loss=0.5, lr=1e-4)
    s.epoch(3, volume_dice=0.82, is_best=True)
    run = s.write(tmp_path / "runs" / "resumed" / "events.jsonl").parent
    write_report([run], tmp_path / "out", overlays=False)
    volume = figures[0].axes[1].get_lines()[0]  # the Dice panel, volume Dice first
    assert list(volume.get_xdata()) == [1, 2, 3]  # was [1, 2, 2, 3]
    assert list(volume.get_ydata()) == [0.70, 0.78, 0.82]
    loss = figures[0].axes[0].get_lines()[0]  # the loss went back to step 15: it was drawn 5, 15, 15, 25
    assert list(loss.get_xdata()) == [5, 15, 25] and list(loss.get_ydata()) == [0.9, 0.6, 0.5]


def test_rewriting_a_report_replaces_it_whole(two_runs, tmp_path):
    out = tmp_path / "r"
    write_report([two_runs[0]], out, overlays=False)
    (out / "stale.png").write_bytes(b"old")
    write_report([two_runs[0]], out, overlays=False)
    assert not (out / "stale.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r", "runs"]  # no temporary folders left


def test_a_report_killed_while_it_swaps_folders_leaves_nothing_the_next_keeps(two_runs, tmp_path):
    """A report killed while it swapped the old report for the new one left hidden folders behind for good; the
    next report went on without them. An earlier report's folder is staged inside itself (files.staged_folder: a
    mount point cannot be renamed), its marker never missing. The kill point is simulated: the process ends
    (os._exit) right after its first rename, an old entry moved aside."""
    out = tmp_path / "r"
    write_report([two_runs[0]], out, overlays=False)
    before = sorted(p.name for p in out.iterdir())
    killed = textwrap.dedent(f"""
        import os
        import liverctl.report.build as build
        real = os.replace
        def replace_then_die(src, dst):
            real(src, dst)
            os._exit(9)
        os.replace = replace_then_die
        build.write_report([{str(two_runs[0])!r}], {str(out)!r}, overlays=False)
    """)
    proc = subprocess.run([sys.executable, "-c", killed], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    assert (out / REPORT_MARKER).is_file() and len(list(out.glob(".r.*"))) == 2  # the new, and the old aside
    write_report([two_runs[0]], out, overlays=False)
    assert (out / "index.html").is_file() and sorted(p.name for p in out.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r", "runs"]


def test_a_report_into_a_mount_point_replaces_what_it_holds_without_crossing_devices(two_runs, tmp_path,
                                                                                     monkeypatch):
    """`report --out /out` where /out is a mount point (Docker's `-v`): the new report was made beside it and
    the old folder renamed aside, which a mount point refuses (OSError: Device or resource busy, a traceback).
    Now an existing folder's report is staged inside it and replaces what an earlier report left there."""
    out = tmp_path / "r"
    out.mkdir()
    real = os.replace

    def one_device(src, dst):  # a mount point: no rename of it, none across it
        if Path(src) == out or Path(src).is_relative_to(out) != Path(dst).is_relative_to(out):
            raise OSError(errno.EBUSY if Path(src) == out else errno.EXDEV, "refused by the mount", os.fspath(src))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", one_device)
    write_report([two_runs[0]], out, overlays=False)
    (out / "curves.png").rename(out / "stale.png")  # what this report will not write again
    write_report([two_runs[0]], out, overlays=False)
    assert sorted(p.name for p in out.iterdir()) == [REPORT_MARKER, "curves.png", "index.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r", "runs"]


def test_bad_input_is_a_liverctl_error(tmp_path):
    with pytest.raises(LiverctlError, match="not a run folder"):
        write_report([tmp_path], tmp_path / "out")
    with pytest.raises(LiverctlError, match="no run given"):
        write_report([], tmp_path / "out")


def test_command_resolves_run_names_and_reports_errors_in_one_line(two_runs, tmp_path):
    runs_dir = two_runs[0].parent
    runner = CliRunner()
    result = runner.invoke(app, ["report", "a-v3", "b-focal", "--runs-dir", str(runs_dir),
                                 "--out", str(tmp_path / "rep"), "--no-overlays"])
    assert result.exit_code == 0, result.output
    assert "index.html" in result.output
    assert png_size(tmp_path / "rep" / "curves.png") == CURVES_PX
    result = runner.invoke(app, ["report", "nope", "--runs-dir", str(runs_dir)])
    assert result.exit_code != 0
    assert result.stderr.startswith("error:") and "Traceback" not in result.output


def test_an_out_that_is_a_file_is_refused_before_the_report_says_what_it_will_take(two_runs, tmp_path):
    """`report RUN -o submission.csv` printed "writing submission.csv: predicting up to 6 validation cases per run
    ... (minutes on a CPU ...)" and then refused the file: the line came above a refusal, of work never done."""
    taken = tmp_path / "submission.csv"
    taken.write_text("id,rle\n")
    result = CliRunner().invoke(app, ["report", str(two_runs[0]), "--out", str(taken)])
    assert result.exit_code == 2
    assert result.output == f"error: {taken}: exists and is not a folder; choose another --out\n"
    result = CliRunner().invoke(app, ["report", str(two_runs[0]), "--out", str(tmp_path / "rep")])
    assert result.stdout.startswith(f"writing {tmp_path / 'rep'}: predicting up to 6 validation cases per run")


def test_curves_need_no_torch(two_runs, tmp_path):
    code = (
        "import sys\n"
        "from liverctl.report.build import write_report\n"
        f"write_report([{str(two_runs[0])!r}], {str(tmp_path / 'r')!r}, overlays=False)\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_overlays_and_case_dice_from_a_checkpoint_and_the_store(tiny_store, tmp_path):
    from run_fixtures import add_model_checkpoint, make_config

    from liverctl.data.store import LiverStore
    from liverctl.report.plots import overlay_figsize

    settings = {"data.input_size": 64, "data.store": str(tiny_store), "model.encoder": "resnet18",
                "model.decoder_channels": [32, 16, 8, 8, 4], "infer.tta": "none"}
    run = make_run(tmp_path / "runs", "tiny", preset="demo", settings=settings, checkpoint=False)
    add_model_checkpoint(run, make_config("demo", settings))
    result = write_report([run], tmp_path / "rep", max_cases=2, slices_per_case=2)
    assert result.skipped == []
    predicted = result.cases["tiny"]
    store = LiverStore.open(tiny_store)
    fold0 = sorted(c for c, f in store.folds().items() if f == 0)
    assert [c.case for c in predicted] == fold0[:2]
    import numpy as np

    from liverctl.infer.predict import load_run_models, predict_cases

    runs_ = load_run_models([run])  # the same checkpoint, predicted as `submit` does, scored by hand
    for case_id, probs in predict_cases(runs_, store, fold0[:2], tta="none"):
        pred, label = probs >= 0.5, store.read_label_volume(case_id) > 0
        want = 2.0 * np.count_nonzero(pred & label) / (np.count_nonzero(pred) + np.count_nonzero(label))
        assert next(c.dice for c in predicted if c.case == case_id) == pytest.approx(want, abs=1e-12)
    for case in predicted:
        assert len(case.slices) == 2
        liver = (store.read_label_volume(case.case) > 0).sum(axis=(0, 1))
        assert int(np.argmax(liver)) in case.slices  # the picture shows the case's liver at its widest
        w, h = overlay_figsize(2)
        assert png_size(case.overlay) == (int(w * DPI), int(h * DPI))
    assert png_size(result.out_dir / "case_dice.png")[1] == int(4.5 * DPI)
    page = result.index_html.read_text(encoding="utf-8")
    assert "src='case_dice.png'" in page
    for case in predicted:
        assert f"src='overlays/tiny/{case.overlay.name}'" in page
    assert "checkpoint best.pt" in page and "TTA none" in page
    assert "Predictions of tiny: the slice with the most liver, then those where label and prediction disagree" in page


def test_missing_store_leaves_a_note_and_the_curves(tmp_path):
    from run_fixtures import add_model_checkpoint, make_config

    settings = {"data.input_size": 64, "data.store": str(tmp_path / "absent.zarr")}
    run = make_run(tmp_path / "runs", "r", preset="demo", settings=settings, checkpoint=False)
    add_model_checkpoint(run, make_config("demo", settings))
    result = write_report([run], tmp_path / "rep")
    assert png_size(result.out_dir / "curves.png") == CURVES_PX
    said = f"{tmp_path / 'absent.zarr'}: no store here (the data.store of run r); pass --store PATH"
    assert len(result.skipped) == 1 and said in result.skipped[0]
    assert said in result.index_html.read_text(encoding="utf-8")
    assert result.refused == []  # nothing to predict with is a plain skip: `liverctl report` exits 0


def test_a_runs_relative_store_missing_from_another_folder_is_said_as_such(tmp_path, monkeypatch):
    """The run's data.store as given to train (store/liver.zarr) is relative to the folder it trained in: from
    another folder the skip said "store store/liver.zarr not found", as if there were none."""
    from run_fixtures import add_model_checkpoint, make_config

    settings = {"data.input_size": 64, "data.store": "store/liver.zarr"}
    run = make_run(tmp_path / "runs", "r", preset="demo", settings=settings, checkpoint=False)
    add_model_checkpoint(run, make_config("demo", settings))
    monkeypatch.chdir(tmp_path)
    result = write_report([run], tmp_path / "rep")
    assert result.skipped == ["r: prediction overlays and per-case Dice skipped: store/liver.zarr: no store here (the "
                              "data.store of run r, relative to the folder the run was trained in); pass --store PATH"]


def test_disagreeing_slices_are_the_most_liver_then_errors_then_liver():
    import numpy as np

    from liverctl.report.predictions import disagreeing_slices

    counts = np.array([[0, 0, 0], [5, 1, 0], [9, 0, 0], [2, 3, 4], [0, 0, 0], [1, 0, 0]])
    assert disagreeing_slices(counts, 1) == [2]  # the most liver
    assert disagreeing_slices(counts, 2) == [2, 3]  # then the most disagreeing pixels
    assert disagreeing_slices(counts, 3) == [1, 2, 3]
    assert disagreeing_slices(counts, 5) == [0, 1, 2, 3, 5]  # then the most liver among the correct ones
    assert disagreeing_slices(np.zeros((4, 3), dtype=int), 2) == [0, 1]
    assert disagreeing_slices(np.array([[0, 0, 0], [0, 7, 0], [0, 9, 0]]), 1) == [2]  # no liver: the errors


def test_an_overlay_of_a_case_whose_errors_lie_outside_the_liver_still_shows_the_liver():
    """totalseg-example (112 slices of 3 mm, liver in the upper abdomen) predicted by an early model that marked
    false liver all over the pelvis: report drew z 11, 12 (pelvis, no liver) and z 76 (51 px of liver), the
    slices with the most false positives, and no picture of the case showed its liver."""
    import numpy as np

    from liverctl.report.predictions import disagreeing_slices

    z = np.arange(112)
    liver = np.where((z >= 70) & (z <= 105), 3000 - 8 * np.abs(z - 92) ** 2, 0).clip(0)
    counts = np.stack([liver // 10, np.where(z < 30, 9500, 3000), liver - liver // 10], axis=1)
    chosen = disagreeing_slices(counts, 3)
    assert int(np.argmax(liver)) in chosen
    assert all(liver[c] == 0 for c in chosen if c != 92)  # the other two: the worst false positives


def test_an_overlay_says_what_each_of_its_colours_means():
    """The error map (third column) was yellow, green and red fills with no key anywhere in the picture: a
    reader of a report on real CT had to guess which of green and red was a miss. A legend below the panels
    now names each outline and each fill the picture draws, in the colours drawn."""
    import numpy as np
    from matplotlib.colors import to_rgba

    from liverctl.report.plots import overlay_figure

    label = np.zeros((8, 8), dtype=bool)
    label[2:6, 2:6] = True
    pred = np.roll(label, 2, axis=0)  # some of each: both, label only, prediction only
    fig = overlay_figure("c", [0], images=[np.zeros((8, 8))], labels=[label], preds=[pred])
    (legend,) = fig.legends
    names = [t.get_text() for t in legend.get_texts()]
    assert names == ["label outline", "prediction outline", "label and prediction (error map)",
                     "missed: label only (error map)", "false +: prediction only (error map)"]
    handles = legend.legend_handles
    lines = {fig.axes[1].collections[i].get_edgecolor()[0].round(3).tobytes(): i for i in range(2)}
    assert {np.array(to_rgba(h.get_color())).round(3).tobytes() for h in handles[:2]} == set(lines)
    error_map = fig.axes[2].get_images()[-1].get_array().reshape(-1, 4)
    drawn = {tuple(round(float(v), 3) for v in c) for c in error_map if c[3] > 0}
    keyed = {tuple(round(float(v), 3) for v in h.get_facecolor()) for h in handles[2:]}
    assert drawn == keyed


def test_each_case_s_bars_stand_on_its_name_also_for_runs_of_other_folds(tmp_path, monkeypatch):
    """report r1 r3 r4, demo runs of folds 2, 3, 4 on the three real CT volumes, each validated on a case of its own:
    case_dice.png put each run's bar a third of a slot to its side, as if the other runs had a bar beside it, so
    'dcmqi-3slice' stood under an empty gap beside r4's bar. Bars now share a case's slot among the runs that
    scored it; where runs share a case they still stand side by side."""
    import liverctl.report.plots as plots
    from liverctl.report.predictions import CaseResult

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))

    def bars(cases):
        plots.plot_case_dice(cases, tmp_path / "case_dice.png")
        ax = figures.pop().axes[0]
        ticks = dict(zip([t.get_text() for t in ax.get_xticklabels()], ax.get_xticks(), strict=True))
        return ticks, [(round(b.get_x() + b.get_width() / 2, 6), round(b.get_width(), 6)) for b in ax.patches]

    ticks, drawn = bars({"r1": [CaseResult("totalseg-example", 0.0658)], "r3": [CaseResult("totalseg-dicom20", 0.1432)],
                         "r4": [CaseResult("dcmqi-3slice", 0.3468)]})
    assert sorted(drawn) == sorted((float(ticks[c]), 0.8) for c in ticks)
    ticks, drawn = bars({"a": [CaseResult("c1", 0.5), CaseResult("c2", 0.7)], "b": [CaseResult("c2", 0.6),
                                                                                     CaseResult("c3", 0.9)]})
    assert drawn == [(0.0, 0.8), (0.8, 0.4), (1.2, 0.4), (2.0, 0.8)]


def test_an_overlay_keeps_the_body_s_proportions_for_pixels_that_are_not_square():
    """Pixels were drawn square whatever the case's spacing: a slice of 0.7 x 0.9 mm pixels (LPS) came out
    stretched by 29 % along one axis. Each panel now takes the affine's height / width of a pixel; the real
    volumes' square pixels (0.81, 0.977, 3.0 mm) stay square, and a case without an affine is drawn as before."""
    import numpy as np
    import pytest

    from liverctl.report.plots import overlay_figure, pixel_aspect, radiological_view

    lps = np.diag([-0.7, -0.9, 2.0, 1.0])  # X toward the left at 0.7 mm, Y toward the back at 0.9 mm
    las = np.diag([-0.7, 0.9, 2.0, 1.0])
    ras_yx = np.array([[0, 0.9, 0, 0], [0.7, 0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])  # X runs A-P, Y L-R
    slice_xy = np.zeros((10, 20))
    for affine, rows_mm in ((lps, 0.9), (las, 0.9), (ras_yx, 0.7)):
        rows = radiological_view(slice_xy, affine).shape[0]
        assert rows == (20 if rows_mm == 0.9 else 10)  # rows follow the anterior-posterior axis
        assert pixel_aspect(affine) == pytest.approx(rows_mm / (1.6 - rows_mm))
    fig = overlay_figure("c", [0], images=[slice_xy], labels=[slice_xy > 0], preds=[slice_xy > 0], affine=lps)
    assert [ax.get_aspect() for ax in fig.axes] == pytest.approx([0.9 / 0.7] * 3)
    assert pixel_aspect(np.diag([-0.810547, -0.810547, 1.0, 1.0])) == pytest.approx(1.0)
    assert pixel_aspect(None) == 1.0 == pixel_aspect(np.zeros((4, 4)))


def test_radiological_view_puts_anterior_up_and_the_patients_right_on_the_left():
    import numpy as np

    from liverctl.report.plots import radiological_view

    # A slice (X, Y) with one bright voxel at the lowest X and lowest Y index.
    slice_xy = np.zeros((4, 3))
    slice_xy[0, 0] = 1
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])  # x grows toward the left, y toward the back
    ras = np.eye(4)  # x grows toward the right, y toward the front
    # LPS: x = 0 is the patient's rightmost column (left of the picture), y = 0 the front row (top).
    assert np.argwhere(radiological_view(slice_xy, lps)).tolist() == [[0, 0]]
    # RAS: x = 0 is the patient's leftmost (right of the picture), y = 0 the back row (bottom).
    assert np.argwhere(radiological_view(slice_xy, ras)).tolist() == [[2, 3]]
    assert radiological_view(slice_xy, ras).shape == (3, 4)
    assert radiological_view(slice_xy, None).shape == (3, 4)
    singular = np.diag([0.0, 0.0, 0.0, 1.0])  # a header with zero sform rows: report ended in a TypeError
    assert np.argwhere(radiological_view(slice_xy, singular)).tolist() == [[0, 0]]


def _train_tiny(store, run_dir, *more):
    """A real `liverctl train` run on the tiny store: 1 epoch of 2 steps, 64 px, tiny decoder."""
    from liverctl.config import resolve_config
    from liverctl.train import loop

    cfg = resolve_config("demo", [f'data.store="{store}"', "data.input_size=64", "data.num_workers=0",
                                  "model.encoder=resnet18", "model.decoder_channels=[32, 16, 16, 8, 8]",
                                  "train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=2",
                                  "train.log_every=1", "infer.tta=none", *more])
    return loop.run_training(cfg, run_dir, device="cpu", show_progress=False)


@pytest.mark.slow  # a real training run: ~35 s on a busy 2-core machine
def test_tiny_trained_run_is_listed_and_reported(tiny_store, tmp_path):
    from liverctl.runs.events import read_events
    from liverctl.runs.summary import scan_runs

    _train_tiny(tiny_store, tmp_path / "runs" / "tiny")
    (summary,) = scan_runs(tmp_path / "runs")
    epoch_end = [e for e in read_events(tmp_path / "runs" / "tiny" / "events.jsonl") if e["kind"] == "epoch_end"]
    assert (summary.name, summary.preset, summary.status) == ("tiny", "demo", "completed")
    assert (summary.epochs_done, summary.epochs_planned, summary.nan_events) == (1, 1, 0)
    assert summary.volume_dice == pytest.approx(epoch_end[0]["volume_dice"])
    assert summary.problems == []
    result = write_report([tmp_path / "runs" / "tiny"], tmp_path / "rep", max_cases=1, slices_per_case=1)
    assert result.skipped == []
    assert png_size(result.out_dir / "curves.png") == CURVES_PX
    (case,) = result.cases["tiny"]
    assert case.overlay.stat().st_size > 1000
    # one validation case, no TTA, input size = slice size: the report scores what validation scored
    assert case.dice == pytest.approx(epoch_end[0]["volume_dice"], abs=1e-9)


@pytest.mark.slow
def test_tiny_nan_abort_run_is_listed_with_its_nan_events(tiny_store, tmp_path):
    from liverctl.errors import NaNAbort
    from liverctl.runs.summary import scan_runs

    with pytest.raises(NaNAbort):
        _train_tiny(tiny_store, tmp_path / "runs" / "nan", "train.epochs=3", "train.nan_skip_limit=1",
                    "train.nan_max_rollbacks=1", f"train.inject_nan_at_steps={list(range(2, 20))}")
    (summary,) = scan_runs(tmp_path / "runs")
    assert summary.status == "nan_abort" and summary.nan_events >= 2
    assert summary.volume_dice is not None  # the clean first epoch stays the best
    result = write_report([tmp_path / "runs" / "nan"], tmp_path / "rep", max_cases=1, slices_per_case=1)
    assert png_size(result.out_dir / "curves.png") == CURVES_PX


def test_asking_for_an_absent_device_is_an_error_not_a_skip(tmp_path):
    import torch
    from run_fixtures import add_model_checkpoint, make_config

    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    settings = {"data.input_size": 64}
    run = make_run(tmp_path / "runs", "r", preset="demo", settings=settings, checkpoint=False)
    add_model_checkpoint(run, make_config("demo", settings))
    result = CliRunner().invoke(app, ["report", str(run), "--device", "cuda", "--out", str(tmp_path / "rep")])
    assert result.exit_code != 0 and "no CUDA device is visible" in result.stderr
    assert not (tmp_path / "rep").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # no temporary folder left behind


def test_out_dir_that_is_not_a_report_is_never_replaced(two_runs, tmp_path):
    runs_dir = two_runs[0].parent
    with pytest.raises(LiverctlError, match="not a liverctl report"):
        write_report([two_runs[0]], runs_dir, overlays=False)
    assert sorted(p.name for p in runs_dir.iterdir()) == ["a-v3", "b-focal"]
    (tmp_path / "empty").mkdir()
    write_report([two_runs[0]], tmp_path / "empty", overlays=False)  # an empty folder is fine
    assert (tmp_path / "empty" / "index.html").is_file()


def test_out_dir_through_a_link_to_nowhere_is_refused_before_the_work(two_runs, tmp_path):
    """`report --out out` where out -> /mnt/big/out and /mnt/big is not mounted ended in a traceback after the
    predictions (FileExistsError: [Errno 17] File exists: 'out'). It is refused up front now, in one line."""
    (tmp_path / "out").symlink_to(tmp_path / "big" / "out")
    started = []
    with pytest.raises(LiverctlError, match=r"out: is a link to .*big/out', which does not exist \(a disk or volume "
                                            r"not mounted\?\); mount it, or choose another --out"):
        write_report([two_runs[0]], tmp_path / "out" / "rep", overlays=False, on_start=lambda: started.append(1))
    assert started == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out", "runs"]


@pytest.mark.parametrize("exists", [False, True])
def test_a_full_disk_while_the_pictures_are_drawn_names_the_report(two_runs, tmp_path, monkeypatch, exists):
    """`report --out /out/rep` on a full disk (a 2 MB tmpfs here) said only 'no space left on the disk being
    written' (matplotlib's write names no file). The line names the report's folder and its disk now, and
    nothing of the report is left; an earlier one stays whole."""
    from matplotlib.figure import Figure

    out = tmp_path / "rep"
    if exists:
        write_report([two_runs[0]], out, overlays=False)
    before = sorted(p.name for p in out.iterdir()) if exists else None

    def full(self, fname, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Figure, "savefig", full)
    with pytest.raises(LiverctlError) as caught:
        write_report([two_runs[0]], out, overlays=False)
    assert str(caught.value).startswith(f"{out}: no space left on ")
    assert str(caught.value).endswith(" while writing the report")
    assert sorted(p.name for p in tmp_path.iterdir()) == (["rep", "runs"] if exists else ["runs"])
    assert not exists or sorted(p.name for p in out.iterdir()) == before


def test_report_of_an_experiment_refuses_a_fold_checkpoint_it_did_not_record(tiny_store, tmp_path):
    """`report EXPERIMENT` loaded each fold's best.pt unchecked (`submit --run EXPERIMENT` checks the sha256
    experiment.json recorded): fold 1's best.pt copied over fold 0's was reported as fold 0, exit 0."""
    import shutil

    from run_fixtures import add_model_checkpoint, make_config
    from typer.testing import CliRunner

    from liverctl.cli import app
    from liverctl.experiment import folder

    settings = {"data.input_size": 64, "data.store": str(tiny_store), "model.encoder": "tu-mobilenetv3_small_050",
                "model.decoder_channels": [16, 8, 8, 8, 8], "infer.tta": "none"}
    exp = tmp_path / "runs" / "cv"
    cfg = make_config("demo", settings)
    results = {}
    for fold in (0, 1):
        run = make_run(exp, f"fold-{fold}", settings={**settings, "data.fold": fold}, checkpoint=False)
        add_model_checkpoint(run, make_config("demo", {**settings, "data.fold": fold}))
        results[str(fold)] = {"status": "completed", "checkpoints": folder.checkpoint_hashes(run)}
    folder.write_summary(exp, {"name": "cv", "preset": "demo", "store": str(tiny_store), "folds": [0, 1],
                               "config": cfg, "status": "completed", "fold_results": results})
    command = ["report", "cv", "--runs-dir", str(tmp_path / "runs"), "--max-cases", "1", "--device", "cpu"]
    best0 = exp / "fold-0" / "checkpoints" / "best.pt"
    shutil.copyfile(exp / "fold-1" / "checkpoints" / "best.pt", best0)
    result = CliRunner().invoke(app, command)
    assert result.exit_code != 0
    assert f"{best0}: not the checkpoint fold 0 produced: its sha256 differs from the one experiment.json" in " ".join(
        result.output.split())


def test_a_read_only_run_folder_names_the_report_folder_and_out(two_runs, monkeypatch):
    """`report RUN` on a run attached read-only (/kaggle/input) named a hidden temporary folder
    ('RUN/.report.c8s_z5rm.tmp (in RUN): read-only file system; point the command at a folder ...'); now the
    report folder it would write and the option that moves it."""
    import errno
    import tempfile

    def read_only(*args, **kwargs):  # what a read-only mount answers (chmod does not stop root)
        raise OSError(errno.EROFS, "Read-only file system", str(kwargs.get("dir")) + "/.report.x.tmp")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    run = two_runs[0]
    result = CliRunner().invoke(app, ["report", str(run), "--no-overlays"])
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: {run / 'report'}: cannot write the report there (Read-only file "
                                     "system); give --out a folder you can write to")


def test_a_long_log_is_folded_into_its_curves_not_kept_as_events(tmp_path):
    """report kept every event of a log as a dict: a 150k-step log was 339 MB of its memory. load_run now folds
    the log into the step series (numbers) and the few events it lists. Here 20k steps (2.8 MB of log): its
    peak was nearly 9 times the log's size, now under twice; the curves and the notable events are those of the log."""
    from memory_peak import traced_peak

    from liverctl.report import run_data

    run = tmp_path / "runs" / "long"
    run.mkdir(parents=True)
    (run / "config.toml").write_text("[train]\nepochs = 1\n", encoding="utf-8")
    step = ('{"v":1,"ts":%d.5,"seq":%d,"run":"long","kind":"step","epoch":0,"step":%d,"loss":%s,"lr":0.0001,'
            '"samples_per_s":100.0,"grad_norm":1.0}\n')
    nan = '{"v":1,"ts":%d.5,"seq":%d,"run":"long","kind":"nan","epoch":0,"step":%d,"where":"loss","action":"skip_step"}\n'
    lines = ['{"v":1,"ts":1.0,"seq":0,"run":"long","kind":"run_start","epoch":0,"step":0}\n']
    for i in range(1, 20_001):
        lines.append(step % (i, i, i, 1 / i) if i % 300 else nan % (i, i, i))
    (run / "events.jsonl").write_text("".join(lines), encoding="utf-8")
    data, peak = traced_peak(lambda: run_data.load_run(run))
    assert peak < 2 * (run / "events.jsonl").stat().st_size
    xs, losses, lrs = data.curves.steps()
    assert len(xs) == 20_000 - 66 and xs[0] == 1 and xs[-1] == 20_000 and losses[-1] == 1 / 20_000
    assert data.curves.nan_steps == [300 * k for k in range(1, 67)]
    assert len(data.curves.notable) == run_data.MAX_NOTABLE_EVENTS and data.curves.notable_count == 66
    page = write_report([run], tmp_path / "out", overlays=False).index_html.read_text(encoding="utf-8")
    assert "... 16 more in events.jsonl" in page

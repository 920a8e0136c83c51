"""The report's pictures, drawn with matplotlib's object API (`Figure` -> Agg canvas): no pyplot state, no
display. `curves.png` from the events only (no torch); `case_dice.png` and the overlays from predictions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from liverctl.files import natural_key
from liverctl.report.run_data import plot_value
from liverctl.runs.events import NO_STEP_EVENTS

if TYPE_CHECKING:
    from liverctl.report.predictions import CaseResult
    from liverctl.report.run_data import RunData

CURVES_FIGSIZE = (12.0, 8.0)  # inches at DPI -> 1200 x 800 px
DICE_FIGSIZE_HEIGHT = 4.5
DPI = 100
OVERLAY_PANEL_IN = 3.2  # inches per overlay panel (three panels per slice row)
DICE_STYLES = {"volume_dice": "-", "slice_dice": "--", "global_dice": ":"}


def _new_figure(width_in: float, height_in: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)  # no bbox_inches: the pixel size stays what was asked


def plot_curves(data: list[RunData], path: Path) -> Path:
    """2 x 2 panels: loss per step, Dice per epoch, learning rate per step, loss per epoch."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig = _new_figure(*CURVES_FIGSIZE)
    ax_loss, ax_dice, ax_lr, ax_epoch = fig.subplots(2, 2).ravel()
    colors = [f"C{i % 10}" for i in range(len(data))]
    for run, color in zip(data, colors, strict=True):
        xs, losses, lrs = run.curves.steps()  # steps done again after a resume: the last
        ax_loss.plot(xs, losses, color=color, lw=1, label=run.name)
        ax_lr.plot(xs, lrs, color=color, lw=1, label=run.name)
        for step in run.curves.nan_steps:
            ax_loss.axvline(step, color=color, ls="--", lw=0.8, alpha=0.6)
        ends = run.curves.epochs()  # an epoch done again: its last
        epochs = [e["epoch"] for e in ends]
        for key, style in DICE_STYLES.items():
            ax_dice.plot(epochs, [plot_value(e.get(key)) for e in ends], color=color, ls=style, marker=".",
                         label=run.name if key == "volume_dice" else "_nolegend_")
        best = run.summary  # the history's best epoch, as `runs` and `watch` show it
        if best.best_epoch is not None and best.volume_dice is not None:
            ax_dice.plot([best.best_epoch], [best.volume_dice], color=color, marker="*", ms=12, ls="none")
        ax_epoch.plot(epochs, [plot_value(e.get("train_loss")) for e in ends], color=color, marker=".")
        ax_epoch.plot(epochs, [plot_value(e.get("val_loss")) for e in ends], color=color, ls="--", marker=".")
    ax_loss.set(title="training loss per step (dashed: NaN events)", xlabel="step", ylabel="loss")
    ax_dice.set(title="validation Dice per epoch (* best)", xlabel="epoch", ylabel="Dice")
    ax_lr.set(title="learning rate", xlabel="step", ylabel="lr")
    ax_epoch.set(title="loss per epoch (solid train, dashed val)", xlabel="epoch", ylabel="loss")
    if _spans_decades([v for line in ax_lr.get_lines() for v in line.get_ydata()]):
        ax_lr.set_yscale("log")
    for ax in (ax_dice, ax_epoch):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax, empty in ((ax_loss, NO_STEPS), (ax_dice, NO_EPOCHS), (ax_lr, NO_STEPS), (ax_epoch, NO_EPOCHS)):
        ax.grid(alpha=0.3)
        if not _has_points(ax):  # its lines may be there, empty: a made-up axis of -0.04 .. 0.04 around nothing
            ax.set(xticks=[], yticks=[])
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)
    if _has_points(ax_dice):
        handles, labels = ax_dice.get_legend_handles_labels()
        for key, style in DICE_STYLES.items():
            handles.append(Line2D([], [], color="black", ls=style))
            labels.append(key.replace("_dice", " Dice"))
        ax_dice.legend(handles, labels, fontsize="small")
    fig.suptitle(" vs ".join(r.name for r in data))
    _save(fig, path)
    return path


# What a curves panel with nothing to draw says in its place.
NO_STEPS = NO_STEP_EVENTS.replace(" one every", " one\nevery")
NO_EPOCHS = "no epoch has ended"


def _has_points(ax) -> bool:
    """Whether any line of `ax` has a point to draw (a finite x and y)."""
    import numpy as np

    for line in ax.get_lines():
        xs, ys = (np.asarray(v, dtype=float) for v in line.get_data())
        if (np.isfinite(xs) & np.isfinite(ys)).any():
            return True
    return False


def _spans_decades(values) -> bool:
    """Whether positive values span more than a factor of 20 (a log axis then reads better)."""
    finite = [float(v) for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 20


def plot_case_dice(cases: dict[str, list[CaseResult]], path: Path) -> Path:
    """Volume Dice per validation case: one group of bars per case, one bar per run; mean as a line."""
    names = [n for n, results in cases.items() if results]
    case_ids = sorted({c.case for n in names for c in cases[n]}, key=natural_key)
    # wide enough for the bars and for a legend row of up to three runs
    width_in = max(6.0, 2.8 * min(3, len(names)), min(24.0, 1.0 + 0.45 * len(case_ids) * len(names)))
    fig = _new_figure(width_in, DICE_FIGSIZE_HEIGHT)
    ax = fig.subplots()
    scored = {n: {c.case: c.dice for c in cases[n]} for n in names}
    # each case's bars share its 0.8 around its tick among the runs that scored it: runs of other folds share
    # no case, and a bar offset for a run with nothing beside it stood away from its case's name
    shown = {case: [n for n in names if case in scored[n]] for case in case_ids}
    for i, name in enumerate(names):
        by_case = scored[name]
        here = [(j, shown[c].index(name), len(shown[c])) for j, c in enumerate(case_ids) if c in by_case]
        xs = [j + (k - (n - 1) / 2) * 0.8 / n for j, k, n in here]
        ys = [by_case[case_ids[j]] for j, _, _ in here]
        finite = [y for y in ys if math.isfinite(y)]
        mean = sum(finite) / len(finite) if finite else math.nan
        ax.bar(xs, ys, width=[0.8 / n for _, _, n in here], color=f"C{i % 10}", label=f"{name} (mean {mean:.4f})")
        ax.axhline(mean, color=f"C{i % 10}", ls="--", lw=1)
    ax.set_xticks(range(len(case_ids)), case_ids, rotation=45 if len(case_ids) > 6 else 0, ha="right"
                  if len(case_ids) > 6 else "center", fontsize="small")
    ax.set(ylim=(0, 1.02), ylabel="volume Dice", title="volume Dice per validation case (dashed: mean)")
    fig.legend(fontsize="small", loc="outside lower center", ncols=min(3, len(names)))  # bars may reach 1
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)
    return path



def overlay_figsize(n_slices: int) -> tuple[float, float]:
    """Inches of an overlay picture: three panels per slice row, plus a title band and a legend band."""
    return 3 * OVERLAY_PANEL_IN, max(1, n_slices) * OVERLAY_PANEL_IN + 0.9


def radiological_view(slice_xy, affine=None):
    """A slice as a radiologist looks at it: the patient's anterior up, the patient's right on the left.

    Shape: (X, Y) -> (rows, cols), for `imshow(origin="upper")`. The in-plane directions come from the
    case's affine; without one, with a singular one, or for a slice that is not axial, X runs across and Y
    down.
    """
    import numpy as np

    rows_axis, flip_rows, flip_cols = _radiological_plan(affine)
    view = np.asarray(slice_xy)
    view = view if rows_axis == 0 else view.T
    return view[::-1 if flip_rows else 1, ::-1 if flip_cols else 1]


def pixel_aspect(affine=None) -> float:
    """Height / width of one pixel of `radiological_view(slice, affine)` in mm, for `imshow(aspect=...)`: a
    slice of 0.7 x 0.9 mm pixels drawn as squares would stretch the body by 29 %. 1 without an affine."""
    import numpy as np

    if affine is None:
        return 1.0
    spacing = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :2], axis=0)  # mm per step along X, Y
    rows_axis = _radiological_plan(affine)[0]
    rows, cols = spacing[rows_axis], spacing[1 - rows_axis]
    if not (np.isfinite(rows) and np.isfinite(cols) and rows > 0 and cols > 0):  # a damaged header
        return 1.0
    return float(rows / cols)


def _radiological_plan(affine) -> tuple[int, bool, bool]:
    """(the voxel axis the view's rows follow, flip the rows, flip the columns) for `radiological_view`."""
    if affine is None:
        return 1, False, False
    from liverctl.data.nifti import axis_codes

    codes = axis_codes(affine)
    if codes is None:  # a singular affine (a damaged header) says nothing of the slice's directions
        return 1, False, False
    codes = codes[:2]
    if sorted(c in "AP" for c in codes) != [False, True] or not any(c in "LR" for c in codes):
        return 1, False, False
    ap = 0 if codes[0] in "AP" else 1  # rows follow the anterior-posterior axis
    # index growing toward anterior: flip so anterior is row 0; toward the patient's right: so right is column 0
    return ap, codes[ap] == "A", codes[1 - ap] == "R"




def plot_overlay(path: Path, case: str, zs: list[int], *, images, labels, preds,
                 window: tuple[float, float] = (-100.0, 200.0), affine=None, title: str | None = None) -> Path:
    """One row per slice `zs[i]`: the image (windowed), label and prediction outlines on it, and the error map.

    Shape: images[i] (X, Y) HU; labels[i], preds[i] (X, Y) bool; affine (4, 4) of the case, used to
    show each slice in the radiological convention (`radiological_view`).
    Outlines and error map: LINE_WORDS and ERROR_MAP_WORDS, with a legend below.
    """
    fig = overlay_figure(case, zs, images=images, labels=labels, preds=preds, window=window, affine=affine,
                         title=title)
    _save(fig, path)
    return path


def overlay_figure(case: str, zs: list[int], *, images, labels, preds, window: tuple[float, float] = (-100.0, 200.0),
                   affine=None, title: str | None = None):
    """`plot_overlay`'s figure, with a legend of its colours below the panels."""
    import numpy as np

    fig = _new_figure(*overlay_figsize(len(zs)))
    axes = np.atleast_2d(fig.subplots(max(1, len(zs)), 3, squeeze=False))
    for row, z in enumerate(zs):
        _overlay_row(axes[row], row, z, (images[row], labels[row], preds[row]), window=window, affine=affine)
    fig.suptitle(title or case)
    _overlay_legend(fig)
    return fig


# The overlays' colours: outlines on the image (middle column), and the error map's fills (right column). From
# Okabe and Ito's palette, told apart with every common colour-vision deficiency: the lime/red outlines and the
# yellow/green/red fills before them were near alike to the 1 in 12 men with red-green colour blindness (a missed
# region in green beside the agreement in yellow: 14 CIELAB units apart to a protanope, against 49 now;
# tests/report/test_plots.py).
LABEL_LINE, PREDICTION_LINE = "#56B4E9", "#E69F00"  # sky blue, orange
ERROR_FILLS = {  # what the error map shows -> RGBA
    "label and prediction": (0.94, 0.89, 0.26, 0.8),  # yellow
    "missed: label only": (0.0, 0.45, 0.70, 0.9),  # blue
    "false +: prediction only": (0.84, 0.37, 0.0, 0.9),  # vermilion
}
# The colours in words, where a title or the HTML says them (the label's in blues, the prediction's in oranges)
LINE_WORDS = "label (blue), prediction (orange)"
ERROR_MAP_WORDS = "yellow both, blue label only (missed liver), orange prediction only (false liver)"


def _overlay_legend(fig) -> None:
    """What each colour means, below the panels: the outlines' and the error map's."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Line2D([], [], color=LABEL_LINE, lw=2, label="label outline"),
               Line2D([], [], color=PREDICTION_LINE, lw=2, label="prediction outline")]
    handles += [Patch(color=rgba, label=f"{name} (error map)") for name, rgba in ERROR_FILLS.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize="small", frameon=False)


def _overlay_row(axes, row: int, z: int, slices, *, window: tuple[float, float], affine) -> None:
    import numpy as np

    lo, hi = window
    hu = np.asarray(slices[0], dtype=np.float32)
    img = radiological_view(np.clip((hu - lo) / max(hi - lo, 1e-6), 0, 1), affine)
    lab = radiological_view(np.asarray(slices[1], dtype=bool), affine)
    pre = radiological_view(np.asarray(slices[2], dtype=bool), affine)
    err = np.zeros((*img.shape, 4), dtype=np.float32)
    err[lab & pre] = ERROR_FILLS["label and prediction"]
    err[lab & ~pre] = ERROR_FILLS["missed: label only"]
    err[~lab & pre] = ERROR_FILLS["false +: prediction only"]
    ax_img, ax_lines, ax_err = axes
    aspect = pixel_aspect(affine)
    for ax in (ax_img, ax_lines, ax_err):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect=aspect)
        ax.set_xticks([])
        ax.set_yticks([])
    for mask, color in ((lab, LABEL_LINE), (pre, PREDICTION_LINE)):
        if mask.any() and not mask.all():
            ax_lines.contour(mask.astype(np.float32), levels=[0.5], colors=color, linewidths=1)
    ax_err.imshow(err, interpolation="nearest", aspect=aspect)
    fp, fn = int((~lab & pre).sum()), int((lab & ~pre).sum())
    ax_img.set_ylabel(f"z = {z}")
    ax_img.set_title("image" if row == 0 else "", fontsize="small")
    ax_lines.set_title((f"{LINE_WORDS}\n" if row == 0 else "") + f"z = {z}", fontsize="small")
    ax_err.set_title(("error map\n" if row == 0 else "") + f"false + {fp} px, missed {fn} px", fontsize="small")

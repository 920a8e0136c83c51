"""`liverctl report`: a folder to open in a browser, with the pictures that judge one or more runs.

- `curves.png`: loss per step (NaN events marked), the three Dice figures per epoch, learning rate per
  step, train/val loss per epoch. Drawn from `events.jsonl` only, so it needs no torch. Several runs
  share the axes, one colour per run.
- `case_dice.png`: volume Dice of each validation case (one bar per run and case), and
  `overlays/<run>/<case>.png`: image, label and prediction on the slices where they disagree most.
  These need the run's checkpoint and the store; when either is missing the report still renders the
  curves and says in `index.html` what was skipped and why.
- `index.html`: the summary table, the pictures and each run's config.

Pictures are drawn with matplotlib's object API (`Figure` -> Agg canvas): no pyplot state, no display.
The report is built in a hidden folder beside `out_dir` and renamed into place, so a report that exists
is complete.
"""

from __future__ import annotations

import html
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liverctl.errors import LiverctlError
from liverctl.files import natural_key
from liverctl.runs import history as runs
from liverctl.runs.events import iter_kind, read_events
from liverctl.runs.folder import EVENTS_FILE

CURVES_FIGSIZE = (12.0, 8.0)  # inches at DPI -> 1200 x 800 px
DICE_FIGSIZE_HEIGHT = 4.5
DPI = 100
OVERLAY_PANEL_IN = 3.2  # inches per overlay panel (three panels per slice row)
REPORT_MARKER = ".liverctl-report"  # marks a folder that `report` may replace
DICE_STYLES = {"volume_dice": "-", "slice_dice": "--", "global_dice": ":"}


@dataclass
class RunData:
    """One run as the report sees it: its summary, events and config text."""

    path: Path
    summary: runs.RunSummary
    events: list[dict]
    config_text: str

    @property
    def name(self) -> str:
        return self.summary.name


@dataclass
class CaseResult:
    """One validation case predicted for the report. Shape: counts (Z, 3) = per-slice (tp, fp, fn)."""

    case: str
    dice: float
    overlay: Path | None = None
    slices: list[int] = field(default_factory=list)


@dataclass
class RunPredictions:
    """The validation cases of one run as predicted for the report, and how they were predicted."""

    cases: list[CaseResult]
    how: str


@dataclass
class ReportResult:
    out_dir: Path
    index_html: Path
    images: list[Path]
    skipped: list[str]
    cases: dict[str, list[CaseResult]] = field(default_factory=dict)  # run name -> predicted cases


def default_out_dir(run_dirs: list[Path]) -> Path:
    """RUN/report for one run; reports/<a>+<b>... beside the runs folder for several."""
    if len(run_dirs) == 1:
        return Path(run_dirs[0]) / "report"
    names = "+".join(Path(d).name for d in run_dirs)
    if len(names) > 100:
        names = f"{Path(run_dirs[0]).name}+{len(run_dirs) - 1}-more"
    return Path(run_dirs[0]).parent.parent / "reports" / names


def load_run(run_dir: str | os.PathLike) -> RunData:
    run_dir = Path(run_dir)
    if not runs.is_run_dir(run_dir):
        raise LiverctlError("not a run folder (no events.jsonl or config.toml)", path=run_dir)
    summary = runs.summarize_run(run_dir)
    try:
        config_text = (run_dir / runs.CONFIG_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        config_text = ""
    return RunData(run_dir, summary, read_events(run_dir / EVENTS_FILE), config_text)


def write_report(
    run_dirs: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    overlays: bool = True,
    store_path: str | os.PathLike | None = None,
    max_cases: int = 6,
    slices_per_case: int = 3,
    device: str = "auto",
    experiments: list[str | os.PathLike] = (),
) -> ReportResult:
    """Write the report folder for `run_dirs` into `out_dir` (replaced whole if it exists); `experiments`
    (whose fold runs are among `run_dirs`) add their fold and out-of-fold option tables."""
    if not run_dirs:
        raise LiverctlError("no run given")
    data = [load_run(d) for d in run_dirs]
    names = [d.name for d in data]
    if len(set(names)) != len(names):
        raise LiverctlError(f"two runs share a name ({', '.join(names)}); give distinct run folders")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)  # before minutes of prediction, and again just before the swap
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(work, 0o777 & ~umask)  # mkdtemp makes it private; a report is meant to be shared
    try:
        images: list[Path] = []
        skipped: list[str] = []
        plot_curves(data, work / "curves.png")
        images.append(work / "curves.png")
        predictions: dict[str, RunPredictions] = {}
        if overlays:
            for run in data:
                try:
                    predictions[run.name] = predict_validation_cases(
                        run, work / "overlays" / _safe_name(run.name), store_path=store_path,
                        max_cases=max_cases, slices_per_case=slices_per_case, device=device,
                    )
                except OverlaySkipped as exc:
                    skipped.append(f"{run.name}: prediction overlays and per-case Dice skipped: {exc}")
                    continue
                images.extend(c.overlay for c in predictions[run.name].cases if c.overlay is not None)
            cases = {name: p.cases for name, p in predictions.items()}
            if any(cases.values()):
                plot_case_dice(cases, work / "case_dice.png")
                images.insert(1, work / "case_dice.png")
        else:
            cases = {}
            skipped.append("prediction overlays and per-case Dice: turned off (--no-overlays)")
        write_index(data, predictions, skipped, work / "index.html", with_case_dice=any(cases.values()),
                    experiments=experiments)
        (work / REPORT_MARKER).write_text("written by liverctl report; the folder is replaced whole on "
                                          "the next report\n", encoding="utf-8")
        _replace_dir(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    moved = [out_dir / p.relative_to(work) for p in images]
    moved_cases = {
        name: [CaseResult(c.case, c.dice, None if c.overlay is None else out_dir / c.overlay.relative_to(work),
                          c.slices) for c in results]
        for name, results in cases.items()
    }
    return ReportResult(out_dir, out_dir / "index.html", moved, skipped, moved_cases)


def _check_out_dir(target: Path) -> None:
    """Refuse to replace anything but an empty folder or an earlier report (`--out runs` must not
    delete the runs)."""
    if not target.exists():
        return
    if not target.is_dir():
        raise LiverctlError("exists and is not a folder; choose another --out", path=target)
    if any(target.iterdir()) and not (target / REPORT_MARKER).is_file():
        raise LiverctlError("exists and is not a liverctl report; choose another --out (an earlier report "
                            "there would be replaced)", path=target)


def _replace_dir(new: Path, target: Path) -> None:
    """Put folder `new` at `target`; an old report there is moved aside first, then deleted."""
    old = None
    _check_out_dir(target)
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------- curves


def _new_figure(width_in: float, height_in: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)  # no bbox_inches: the pixel size stays what was asked


def _num(value: Any) -> float:
    """A plottable number: None / non-finite -> NaN (a gap in the line)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def plot_curves(data: list[RunData], path: Path) -> Path:
    """2 x 2 panels: loss per step, Dice per epoch, learning rate per step, loss per epoch."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig = _new_figure(*CURVES_FIGSIZE)
    ax_loss, ax_dice, ax_lr, ax_epoch = fig.subplots(2, 2).ravel()
    colors = [f"C{i % 10}" for i in range(len(data))]
    for run, color in zip(data, colors, strict=True):
        steps = [e for e in iter_kind(run.events, "step") if isinstance(e.get("step"), (int, float))]
        xs = [e["step"] for e in steps]
        ax_loss.plot(xs, [_num(e.get("loss")) for e in steps], color=color, lw=1, label=run.name)
        ax_lr.plot(xs, [_num(e.get("lr")) for e in steps], color=color, lw=1, label=run.name)
        for nan in iter_kind(run.events, "nan"):
            if isinstance(nan.get("step"), (int, float)):
                ax_loss.axvline(nan["step"], color=color, ls="--", lw=0.8, alpha=0.6)
        ends = [e for e in iter_kind(run.events, "epoch_end") if isinstance(e.get("epoch"), (int, float))]
        epochs = [e["epoch"] for e in ends]
        for key, style in DICE_STYLES.items():
            ax_dice.plot(epochs, [_num(e.get(key)) for e in ends], color=color, ls=style, marker=".",
                         label=run.name if key == "volume_dice" else "_nolegend_")
        best = [e for e in ends if e.get("is_best")]
        if best:
            ax_dice.plot([best[-1]["epoch"]], [_num(best[-1].get("volume_dice"))], color=color, marker="*",
                         ms=12, ls="none")
        ax_epoch.plot(epochs, [_num(e.get("train_loss")) for e in ends], color=color, marker=".")
        ax_epoch.plot(epochs, [_num(e.get("val_loss")) for e in ends], color=color, ls="--", marker=".")
    ax_loss.set(title="training loss per step (dashed: NaN events)", xlabel="step", ylabel="loss")
    ax_dice.set(title="validation Dice per epoch (* best)", xlabel="epoch", ylabel="Dice")
    ax_lr.set(title="learning rate", xlabel="step", ylabel="lr")
    ax_epoch.set(title="loss per epoch (solid train, dashed val)", xlabel="epoch", ylabel="loss")
    if _spans_decades([v for line in ax_lr.get_lines() for v in line.get_ydata()]):
        ax_lr.set_yscale("log")
    for ax in (ax_dice, ax_epoch):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_loss, ax_dice, ax_lr, ax_epoch):
        ax.grid(alpha=0.3)
        if not ax.get_lines():
            ax.text(0.5, 0.5, "no events of this kind yet", ha="center", va="center", transform=ax.transAxes)
    if ax_dice.get_lines():
        handles, labels = ax_dice.get_legend_handles_labels()
        for key, style in DICE_STYLES.items():
            handles.append(Line2D([], [], color="black", ls=style))
            labels.append(key.replace("_", " "))
        ax_dice.legend(handles, labels, fontsize="small")
    fig.suptitle(" vs ".join(r.name for r in data))
    _save(fig, path)
    return path


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
    bar_w = 0.8 / len(names)
    for i, name in enumerate(names):
        by_case = {c.case: c.dice for c in cases[name]}
        xs = [j + (i - (len(names) - 1) / 2) * bar_w for j in range(len(case_ids))]
        ys = [by_case.get(c, math.nan) for c in case_ids]
        finite = [y for y in ys if math.isfinite(y)]
        mean = sum(finite) / len(finite) if finite else math.nan
        ax.bar(xs, ys, width=bar_w, color=f"C{i % 10}", label=f"{name} (mean {mean:.4f})")
        ax.axhline(mean, color=f"C{i % 10}", ls="--", lw=1)
    ax.set_xticks(range(len(case_ids)), case_ids, rotation=45 if len(case_ids) > 6 else 0, ha="right"
                  if len(case_ids) > 6 else "center", fontsize="small")
    ax.set(ylim=(0, 1.02), ylabel="volume Dice", title="volume Dice per validation case (dashed: mean)")
    fig.legend(fontsize="small", loc="outside lower center", ncols=min(3, len(names)))  # bars may reach 1
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)
    return path


# -------------------------------------------------------------------------------- prediction overlays


class OverlaySkipped(Exception):
    """Why a run's prediction pictures could not be drawn (said in index.html, not raised at the user)."""


def predict_validation_cases(
    run: RunData,
    out_dir: Path,
    *,
    store_path: str | os.PathLike | None,
    max_cases: int,
    slices_per_case: int,
    device: str,
) -> RunPredictions:
    """Predict up to `max_cases` validation cases of `run` (the store cases in the run's validation fold),
    draw their overlays into `out_dir` and return each case's volume Dice.

    Predictions use the run's best checkpoint (else its last), its `infer.tta` and `infer.threshold`,
    and no post-processing: what the model itself sees. Raises OverlaySkipped, with the reason, when the
    checkpoint, the store or the inference code is missing.
    """
    checkpoints = run.path / runs.CHECKPOINT_DIR
    which = next((w for w in ("best", "last") if (checkpoints / f"{w}.pt").is_file()), None)
    if which is None:
        raise OverlaySkipped("no checkpoints/best.pt or last.pt to predict with")
    try:
        import numpy as np

        from liverctl.data.store import LiverStore
        from liverctl.device import resolve_device
        from liverctl.infer.predict import load_run_models, predict_cases
        from liverctl.metrics import DiceCounts, slice_counts
    except ImportError as exc:  # e.g. a listing-only install without torch
        raise OverlaySkipped(f"prediction needs {exc.name or exc}, which cannot be imported") from None
    device = str(resolve_device(device))  # a device that is not there is the user's error, not a skip

    cfg_data = run.summary.settings
    store_path = Path(store_path if store_path is not None else cfg_data.get("data.store", "store/liver.zarr"))
    if not store_path.exists():
        raise OverlaySkipped(f"store {store_path} not found (pass --store)")
    try:
        store = LiverStore.open(store_path)
        (run_model,) = load_run_models([run.path], which=which, device=device)
    except (LiverctlError, RuntimeError) as exc:  # RuntimeError: torch, e.g. weights not matching the model
        raise OverlaySkipped(_one_line(exc)) from None
    cfg = run_model.cfg
    fold = int(cfg["data"]["fold"])
    case_ids = sorted((c for c, f in store.folds().items() if f == fold), key=natural_key)[:max_cases]
    if not case_ids:
        raise OverlaySkipped(f"store {store_path} has no training case in validation fold {fold}")
    infer = cfg.get("infer", {})
    threshold = float(infer.get("threshold", 0.5))
    tta = str(infer.get("tta", "none"))
    how = (f"checkpoint {which}.pt, {len(case_ids)} case(s) of validation fold {fold} from {store_path}, "
           f"TTA {tta}, threshold {threshold:g}, no post-processing, on {device}")
    results = []
    try:
        for case, probs in predict_cases([run_model], store, case_ids, tta=tta,
                                         batch_size=int(infer.get("batch_size", 16)), device=device):
            pred = probs >= threshold
            label = np.asarray(store.label(case)[:]) > 0
            counts = slice_counts(pred, label)  # (Z, 3): tp, fp, fn per slice
            dice = DiceCounts()
            dice.add_slices(case, counts)
            zs = disagreeing_slices(counts, slices_per_case)
            path = out_dir / f"{_safe_name(case)}.png"
            window = cfg["data"].get("window", (-100.0, 200.0))
            plot_overlay(
                case,
                [store.read_slice(case, z) for z in zs],
                [label[..., z] for z in zs],
                [pred[..., z] for z in zs],
                zs,
                path,
                window=(float(window[0]), float(window[1])),
                affine=store.meta(case).get("affine"),
                title=f"{run.name} / {case}: volume Dice {dice.volume_dice():.4f}",
            )
            results.append(CaseResult(case, dice.volume_dice(), path, zs))
    except (LiverctlError, RuntimeError, ValueError) as exc:
        raise OverlaySkipped(f"prediction failed: {_one_line(exc)}") from None
    return RunPredictions(results, how)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}" if not isinstance(exc, LiverctlError) else str(exc)


def disagreeing_slices(counts, k: int) -> list[int]:
    """The `k` slices with the most disagreeing pixels (fp + fn), in z order; where fewer than `k`
    slices disagree at all, the slices with the most liver fill the rest.

    Shape: counts (Z, 3) = per-slice (tp, fp, fn).
    """
    rows = [(int(fp) + int(fn), int(tp) + int(fn), z) for z, (tp, fp, fn) in enumerate(counts.tolist())]
    wrong = sorted((r for r in rows if r[0] > 0), key=lambda r: (-r[0], r[2]))[:k]
    chosen = {r[2] for r in wrong}
    rest = sorted((r for r in rows if r[2] not in chosen), key=lambda r: (-r[1], r[2]))
    chosen.update(r[2] for r in rest[: k - len(chosen)])
    return sorted(chosen)


def overlay_figsize(n_slices: int) -> tuple[float, float]:
    """Inches of an overlay picture: three panels per slice row, plus a title band."""
    return 3 * OVERLAY_PANEL_IN, max(1, n_slices) * OVERLAY_PANEL_IN + 0.5


def radiological_view(slice_xy, affine=None):
    """A slice as a radiologist looks at it: the patient's anterior up, the patient's right on the left.

    Shape: (X, Y) -> (rows, cols), for `imshow(origin="upper")`. The in-plane directions come from the
    case's affine; without one, or for a slice that is not axial, X runs across and Y down.
    """
    import numpy as np

    view = np.asarray(slice_xy)
    if affine is None:
        return view.T
    import nibabel as nib

    codes = nib.aff2axcodes(np.asarray(affine, dtype=np.float64))[:2]
    if sorted(c in "AP" for c in codes) != [False, True] or not any(c in "LR" for c in codes):
        return view.T
    ap = 0 if codes[0] in "AP" else 1
    lr = 1 - ap
    view = view if ap == 0 else view.T  # rows follow the anterior-posterior axis
    if codes[ap] == "A":  # index grows toward anterior: flip so anterior is row 0
        view = view[::-1, :]
    if codes[lr] == "R":  # index grows toward the patient's right: flip so right is column 0
        view = view[:, ::-1]
    return view


def plot_overlay(case: str, images, labels, preds, zs: list[int], path: Path, *,
                 window: tuple[float, float] = (-100.0, 200.0), affine=None, title: str | None = None) -> Path:
    """One row per slice: the image (windowed), label and prediction outlines on it, and the error map.

    Shape: images[i] (X, Y) HU; labels[i], preds[i] (X, Y) bool; affine (4, 4) of the case, used to
    show each slice in the radiological convention (`radiological_view`).
    Outlines: label green, prediction red. Error map: yellow both, green label only (missed), red
    prediction only (false liver).
    """
    import numpy as np

    fig = _new_figure(*overlay_figsize(len(zs)))
    axes = np.atleast_2d(fig.subplots(max(1, len(zs)), 3, squeeze=False))
    lo, hi = window
    for row, z in enumerate(zs):
        hu = np.asarray(images[row], dtype=np.float32)
        img = radiological_view(np.clip((hu - lo) / max(hi - lo, 1e-6), 0, 1), affine)
        lab = radiological_view(np.asarray(labels[row], dtype=bool), affine)
        pre = radiological_view(np.asarray(preds[row], dtype=bool), affine)
        err = np.zeros((*img.shape, 4), dtype=np.float32)
        err[lab & pre] = (1.0, 0.85, 0.0, 0.8)
        err[lab & ~pre] = (0.0, 0.8, 0.0, 0.9)
        err[~lab & pre] = (0.9, 0.0, 0.0, 0.9)
        ax_img, ax_lines, ax_err = axes[row]
        for ax in (ax_img, ax_lines, ax_err):
            ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        for mask, color in ((lab, "lime"), (pre, "red")):
            if mask.any() and not mask.all():
                ax_lines.contour(mask.astype(np.float32), levels=[0.5], colors=color, linewidths=1)
        ax_err.imshow(err, interpolation="nearest")
        fp, fn = int((~lab & pre).sum()), int((lab & ~pre).sum())
        ax_img.set_ylabel(f"z = {z}")
        ax_img.set_title("image" if row == 0 else "", fontsize="small")
        ax_lines.set_title(("label (green), prediction (red)\n" if row == 0 else "") + f"z = {z}",
                           fontsize="small")
        ax_err.set_title(f"false + {fp} px, missed {fn} px", fontsize="small")
    fig.suptitle(title or case)
    _save(fig, path)
    return path


def _safe_name(case: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in case) or "case"


# -------------------------------------------------------------------------------------------- html


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #ddd; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
.skipped { color: #8a5a00; } .problem { color: #a00; }
"""


def write_index(data: list[RunData], predictions: dict[str, RunPredictions], skipped: list[str], path: Path,
                *, with_case_dice: bool, experiments=()) -> Path:
    """index.html beside the pictures (relative links, so the folder can be moved or zipped)."""
    esc = html.escape
    summaries = [r.summary for r in data]
    varied = runs.varied_settings(summaries)
    title = "liverctl report: " + ", ".join(r.name for r in data)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>"]

    head = ["run", "preset", *varied, "status", "NaN events", "epochs", "best epoch", "volume Dice",
            "slice Dice", "global Dice", "wall", "submitted"]
    parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>")
    for s in summaries:
        cells = [esc(s.name), esc(s.preset or "-"), *(esc(runs.format_setting(s.settings.get(k))) for k in varied),
                 esc(s.status)]
        nums = [str(s.nan_events), f"{s.epochs_done}/{s.epochs_planned if s.epochs_planned is not None else '?'}",
                "-" if s.best_epoch is None else str(s.best_epoch), _fmt(s.volume_dice), _fmt(s.slice_dice),
                _fmt(s.global_dice), runs.format_duration(s.wall_seconds), _fmt(s.best_submitted)]
        parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells)
                     + "".join(f"<td class='num'>{esc(n)}</td>" for n in nums) + "</tr>")
    parts.append("</table><p>Dice figures at the best epoch (chosen by volume Dice). Volume Dice: per case, "
                 "averaged; slice Dice: per 2D slice, averaged, empty-on-empty counted as 1; "
                 "global Dice: pooled over all voxels.</p>")
    if experiments:
        from liverctl.experiment.tables import experiment_html

        parts.extend(experiment_html(e) for e in experiments)
    problems = [(s.name, p) for s in summaries for p in s.problems]
    if problems:
        parts.append("<h2>Missing or odd</h2><ul>")
        parts.extend(f"<li class='problem'><b>{esc(n)}</b>: {esc(p)}</li>" for n, p in problems)
        parts.append("</ul>")
    if skipped:
        parts.append("<h2>Skipped</h2><ul>")
        parts.extend(f"<li class='skipped'>{esc(s)}</li>" for s in skipped)
        parts.append("</ul>")

    parts.append("<h2>Training curves</h2><img src='curves.png' alt='training curves'>")
    parts.extend(_notable_events_html(data))
    if with_case_dice:
        parts.append("<h2>Volume Dice per validation case</h2><img src='case_dice.png' alt='per-case Dice'>")
    for run in data:
        predicted = predictions.get(run.name)
        results = [c for c in predicted.cases if c.overlay is not None] if predicted else []
        if not results:
            continue
        parts.append(f"<h2>Predictions of {esc(run.name)}: slices where label and prediction disagree most"
                     f"</h2><p>{esc(predicted.how)}. Right column: yellow both, green label only (missed "
                     "liver), red prediction only (false liver).</p>")
        for c in sorted(results, key=lambda c: c.dice):
            rel = c.overlay.relative_to(path.parent).as_posix()
            parts.append(f"<h3>{esc(c.case)}: volume Dice {c.dice:.4f}, slices {', '.join(map(str, c.slices))}"
                         f"</h3><img src='{esc(rel)}' alt='{esc(c.case)} overlay'>")
    parts.append("<h2>Config</h2>")
    for run in data:
        text = run.config_text or "(no config.toml in this run folder)"
        parts.append(f"<details open><summary>{esc(run.name)}: {esc(str(run.path))}/config.toml</summary>"
                     f"<pre>{esc(text)}</pre></details>")
    parts.append("</body></html>\n")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


NOTABLE_KINDS = ("nan", "note", "run_end")
MAX_NOTABLE_EVENTS = 50  # per run; a run that skipped thousands of steps needs the first ones, not all


def _notable_events_html(data: list[RunData]) -> list[str]:
    """A table of the NaN guard's actions, notes and end messages of each run (what curves cannot say)."""
    esc = html.escape
    rows = []
    for run in data:
        notable = [e for e in run.events if e.get("kind") in NOTABLE_KINDS
                   and not (e.get("kind") == "run_end" and not e.get("message"))]
        for e in notable[:MAX_NOTABLE_EVENTS]:
            what = e.get("action") or e.get("status") or ""
            detail = e.get("message") or e.get("where") or ""
            rows.append(f"<tr><td>{esc(run.name)}</td><td>{esc(str(e.get('kind')))}</td>"
                        f"<td class='num'>{esc(str(e.get('epoch', '')))}</td>"
                        f"<td class='num'>{esc(str(e.get('step', '')))}</td><td>{esc(str(what))}</td>"
                        f"<td>{esc(str(detail))}</td></tr>")
        if len(notable) > MAX_NOTABLE_EVENTS:
            rows.append(f"<tr><td>{esc(run.name)}</td><td colspan='5'>... {len(notable) - MAX_NOTABLE_EVENTS} "
                        "more in events.jsonl</td></tr>")
    if not rows:
        return []
    head = "".join(f"<th>{h}</th>" for h in ("run", "event", "epoch", "step", "action / status", "message"))
    return ["<h2>NaN guard, notes and end messages</h2><table><tr>" + head + "</tr>", *rows, "</table>"]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"

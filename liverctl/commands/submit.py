"""`liverctl submit` (runs -> submission.csv), `liverctl postprocess` (NIfTI clean-up), `liverctl evaluate`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from liverctl.commands._common import (
    STDOUT,
    FileOrStdoutCommand,
    console,
    err_console,
    guarded,
    progress_bar,
)
from liverctl.device import DEVICE_HELP
from liverctl.errors import LiverctlError
from liverctl.plural import plural
from liverctl.printable import esc, escaped, quoted

MAX_PROBLEMS_SHOWN = 20
# postprocess and evaluate read a mask or label alike
LIVER_LABELS_HELP = "Label values that mean liver, e.g. 1 or 1,2 (default: any non-zero)."


def register(app: typer.Typer) -> None:
    app.command("submit")(submit_command)
    app.command("postprocess")(postprocess_command)
    app.command("evaluate", cls=FileOrStdoutCommand)(evaluate_command)


def _liver_labels(text: str | None) -> list[int] | None:
    from liverctl.data.liver_mask import check_liver_labels
    from liverctl.errors import LiverctlError

    if text is None or not text.strip():
        return None
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        values = []
    if not values:  # `,` named no label: not "any non-zero" behind the user's back
        raise LiverctlError(f"--liver-labels takes comma-separated integers such as 1 or 1,2 (got {quoted(text)})")
    return check_liver_labels(values, f"--liver-labels {text}")


def submit_command(
    *,
    runs: list[Path] = typer.Option(..., "--run", help="Run or experiment folder (an experiment: all its folds, its out-of-fold decision), or its name under --runs-dir; repeat to ensemble."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Folder holding the run folders: where --run names are looked up."),
    out: Path = typer.Option(Path("submission.csv"), "--out", "-o", help="CSV to write."),
    store: Path = typer.Option(None, "--store", help="Zarr store (default: the first run's data.store)."),
    sample: Path = typer.Option(None, "--sample", help="sample_submission.csv: its header, order and empty token."),
    tta: str = typer.Option(None, "--tta", help="none | hflip | vflip | hflip+vflip | flips (default: the first run's infer.tta)."),
    postprocess: str = typer.Option(
        None, "--postprocess", help="none | largest | min-size:N | fill | fill2d | auto, '+'-joined (default: an experiment's out-of-fold "
        "decision, else the first run's post.mode)."
    ),
    threshold: float = typer.Option(None, "--threshold", help="Probability threshold (default: an experiment's out-of-fold decision, "
                                   "else the first run's infer.threshold)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Slices per forward pass (default: the first run's infer.batch_size)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    which: str = typer.Option("best", "--checkpoint", help="Checkpoint of each run: best | last."),
    save_masks: Path = typer.Option(None, "--save-masks", help="Also write each test mask as NIfTI (uint8) into this folder."),
    weights: str = typer.Option(None, "--weights", help="Ensemble weights, one per --run in their order, e.g. 2,1 (default: "
                                "each --run an equal share; an experiment's share is split among its folds)."),
) -> None:
    """Predict the store's test cases with one run or an ensemble, post-process, write a checked CSV."""
    from liverctl.infer.submit import make_submission
    from liverctl.runs.folder import resolve_run

    with guarded(log=True):
        shares = _weights(weights)
        runs = [resolve_run(runs_dir, run, need="folder", flag="--run") for run in runs]
        with progress_bar("slices", transient=True) as bar:
            result = make_submission(
                runs, out, store_path=store, which=which, sample_path=sample, tta=tta, postprocess=postprocess,
                threshold=threshold, batch_size=batch_size, device=device, save_masks=save_masks, weights=shares,
                on_stage=bar.stage, on_slices=lambda n: bar.update(advance=n),
                on_note=lambda text: console.print(text, highlight=False, markup=False),
            )
        _print_submission(result)


def _weights(text: str | None) -> list[float] | None:
    """`--weights 2,1` -> [2.0, 1.0]; each is checked against the runs by `expand_runs`."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise LiverctlError(f"--weights takes comma-separated numbers, one per --run, such as 2,1 (got {quoted(text)})") from None
    return values


def _print_submission(result) -> None:
    s = result.summary
    post = result.post if result.post_requested != "auto" else f"{result.post} (auto)"
    console.print(
        f"[bold green]wrote[/] {esc(s.path)}: {plural(s.rows, 'row')}, {plural(s.cases, 'test case')}, "
        f"{s.empty_rows} empty; {plural(len(result.runs), 'run')}{', weighted' if result.weights else ''}, tta {esc(result.tta)}, post {esc(post)}, threshold {result.threshold:g}, "
        f"{result.device}, {result.seconds:.1f} s; sha256 {s.sha256[:12]}",
        highlight=False,
    )
    if result.masks_dir:
        console.print(f"masks in {result.masks_dir}", highlight=False, markup=False)


def postprocess_command(
    source: Path = typer.Argument(..., metavar="SOURCE", help="NIfTI mask file (.nii, .nii.gz, or a .hdr/.img pair) or folder of them."),
    target: Path = typer.Argument(..., metavar="TARGET", help="Output file, or folder (for a folder input)."),
    mode: str = typer.Option("largest", "--mode", "-m", help="none | largest | min-size:N | fill | fill2d, '+'-joined."),
    liver_labels: str = typer.Option(None, "--liver-labels", help=LIVER_LABELS_HELP),
    in_place: bool = typer.Option(False, "--in-place", help="Allow TARGET to be SOURCE: overwrite the input mask files."),
) -> None:
    """3D connected-component clean-up of NIfTI masks; keeps each file's header and affine."""
    from liverctl.errors import LiverctlError
    from liverctl.infer.postprocess import AUTO, FilesNotCleaned, postprocess_nifti

    with guarded(log=True):
        if mode.strip().lower() == AUTO:
            raise LiverctlError("--mode auto needs a run's validation cases; use it with `liverctl submit`")
        try:
            results = postprocess_nifti(
                source, target, mode, liver_labels=_liver_labels(liver_labels), in_place=in_place
            )
        except FilesNotCleaned as exc:
            _print_cleaned(exc.results)
            for line in exc.failures:
                err_console.print(f"  {line}", highlight=False, soft_wrap=True, markup=False)
            raise
        _print_cleaned(results)
        console.print(f"[bold green]cleaned[/] {plural(len(results), 'file')} with {esc(mode)}", highlight=False)


def _print_cleaned(results) -> None:
    for r in results:
        console.print(f"{r.source.name} -> {r.target}: {r.voxels_before} -> {r.voxels_after} voxels", highlight=False,
                      markup=False)
        if r.note:  # beneath the file's line it explains, as evaluate's beneath its figures
            err_console.print(f"[bold yellow]note:[/] {esc(r.note)}", highlight=False, soft_wrap=True)


def evaluate_command(
    submission: Path = typer.Argument(..., metavar="SUBMISSION", help="Submission CSV."),
    labels: Path = typer.Option(..., "--labels", help="Folder of label volumes named <id> or segmentation-<id> (.nii, .nii.gz, or .hdr/.img pairs)."),
    json_out: Path = typer.Option(None, "--json", metavar="[FILE]", help="Also write the scores JSON to FILE; "
                                  "alone or '-': on stdout, alone there (the table then goes to stderr)."),
    liver_labels: str = typer.Option(None, "--liver-labels", help=LIVER_LABELS_HELP),
) -> None:
    """Score a submission: volume, slice and global Dice, per case and overall."""
    from liverctl.infer.evaluate import evaluate_submission, write_scores, write_scores_beside
    from liverctl.infer.submission import MalformedSubmission

    to_stdout = json_out is not None and str(json_out) == STDOUT
    elsewhere = json_out if json_out is not None and not to_stdout else None  # --json FILE
    with guarded(log=not to_stdout):
        if elsewhere is not None:  # before the scoring, as bench does
            from liverctl.files import check_output_file

            check_output_file(elsewhere, what="the scores", option="--json", folder_hint="--json takes a file name, e.g. scores.json")
        try:
            ev = evaluate_submission(submission, labels, liver_labels=_liver_labels(liver_labels))
        except MalformedSubmission as exc:
            for problem in exc.problems[:MAX_PROBLEMS_SHOWN]:
                err_console.print(f"  {problem}", highlight=False, soft_wrap=True, markup=False)
            if exc.count > MAX_PROBLEMS_SHOWN:
                err_console.print(f"  ... and {exc.count - MAX_PROBLEMS_SHOWN} more", highlight=False)
            # the problems are listed: the error line counts them rather than repeating the first
            raise LiverctlError(f"malformed submission: {plural(exc.count, 'problem')} (above)",
                                path=exc.path) from None
        # `--json -`: stdout holds the JSON alone (for a pipe or jq), the table goes to stderr, as with bench.
        out = err_console if to_stdout else console
        # the figures before any file is written: a write that fails (a full disk) still leaves them shown
        _print_scores(ev, out)
        for note in ev.notes:  # beneath the figures they explain
            err_console.print(f"[bold yellow]note:[/] {esc(note)}", highlight=False, soft_wrap=True)
        beside, unsaved = write_scores_beside(ev, submission, elsewhere=elsewhere)
        saved = [beside] if beside is not None else []
        if elsewhere is not None:
            saved.append(write_scores(ev, elsewhere))
        if unsaved:
            err_console.print(f"[bold yellow]note:[/] {esc(unsaved)}", highlight=False, soft_wrap=True)
        if saved:
            out.print(f"scores saved to {' and '.join(map(str, saved))}", highlight=False, markup=False)
        if to_stdout:
            typer.echo(json.dumps(ev.to_json(), indent=2))


SCORE_HEADERS = ("case", "volume Dice", "slice Dice", "label voxels", "pred voxels", "slices")


def _print_scores(ev, out) -> None:
    """The per-case table through narrow.print_table: whole, each case id in full (rich cut long ids to
    'ttotalseg-d…' at 80 columns, even into a pipe), or as records on a terminal too narrow for it."""
    from rich.table import Table
    from rich.text import Text

    from liverctl.narrow import print_lines, print_table

    title = f"{ev.submission} vs {ev.labels}"
    table = Table(title=esc(title), title_justify="left", header_style="bold")
    title = escaped(title)  # the records' title, printed as it is
    for name in SCORE_HEADERS:
        table.add_column(name, justify="left" if name == "case" else "right", overflow="fold")
    rows = [[Text(escaped(c.case)), *(Text(v) for v in (f"{c.volume_dice:.4f}", f"{c.slice_dice:.4f}", str(c.label_voxels),
                                                str(c.pred_voxels), str(c.slices)))] for c in ev.cases]
    for row in rows:
        table.add_row(*row)
    print_table(out, table, title, list(SCORE_HEADERS), rows)
    # one line where it fits, else a figure per line: never broken inside one (at 60 columns the terminal
    # broke 'slice Dice 0.0787 (m' / 'ean over slices, ...')
    print_lines(out, [[Text.assemble((f"volume Dice {ev.volume_dice:.4f}", "bold"),
                                     f" (mean over {plural(len(ev.cases), 'case')})"),
                       Text(f"slice Dice {ev.slice_dice:.4f} (mean over slices, empty-on-empty = 1)"),
                       Text(f"global Dice {ev.global_dice:.4f} (pooled voxels)")]])

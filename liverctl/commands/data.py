"""`liverctl synth` and `liverctl ingest`: thin commands over liverctl.synth and liverctl.ingest."""

from __future__ import annotations

from pathlib import Path

import typer

from liverctl.commands._common import console, err_console, esc, guarded, print_error


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def _parse_labels(text: str | None) -> list[int] | None:
    from liverctl.errors import LiverctlError

    if text is None or text.strip() == "":
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise LiverctlError(f"--liver-labels {text!r}: expected label values like 1 or 1,2") from None


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[last]}"),
        console=err_console,
        transient=False,
    )


def synth(
    out: Path = typer.Argument(..., help="Folder to write the dataset into (created if missing)."),
    cases: int = typer.Option(8, "--cases", help="Training cases (volume + label)."),
    test_cases: int = typer.Option(2, "--test-cases", help="Test cases (labels go to OUT/test_labels/)."),
    size: int = typer.Option(512, "--size", help="In-plane size in pixels (size x size)."),
    slices: int = typer.Option(150, "--slices", help="Slices per volume."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed writes the same bytes."),
    workers: int = typer.Option(None, "--workers", help="Processes (default: all cores)."),
) -> None:
    """Write a synthetic CT dataset (phantom abdomen with a liver) in the competition layout."""
    with guarded():
        import time

        from liverctl.synth import write_synthetic_dataset

        started = time.perf_counter()
        with _progress() as progress:
            task = progress.add_task("synth", total=cases + test_cases, last="")
            result = write_synthetic_dataset(
                out,
                cases=cases,
                test_cases=test_cases,
                size=size,
                slices=slices,
                seed=seed,
                workers=workers,
                on_case=lambda case_id: progress.update(task, advance=1, last=f"case {esc(case_id)}"),
            )
        console.print(
            f"wrote {result.train_cases} training and {result.test_cases} test cases "
            f"({size}x{size}x{slices}) to {esc(out)}: {_human_bytes(result.bytes_written)} "
            f"in {time.perf_counter() - started:.1f} s"
        )


def ingest(
    data: Path = typer.Argument(..., help="Data folder: train/volume, train/segmentation, test/."),
    store: Path = typer.Option(Path("store/liver.zarr"), "--store", help="Zarr store to create or update."),
    liver_labels: str = typer.Option(
        None, "--liver-labels", help="Label values that mean liver, e.g. 1 or 1,2 (default: any value > 0)."
    ),
    folds: int = typer.Option(5, "--folds", help="Patient-level folds for cross-validation."),
    fold_seed: int = typer.Option(0, "--fold-seed", help="Seed of the fold assignment."),
    workers: int = typer.Option(None, "--workers", help="Processes (default: all cores)."),
) -> None:
    """Ingest a NIfTI folder into the Zarr store (atomic per case, resumable, parallel)."""
    with guarded():
        from liverctl.errors import LiverctlError
        from liverctl.ingest import ingest_folder

        labels = _parse_labels(liver_labels)
        with _progress() as progress:
            task = progress.add_task("ingest", total=None, last="")

            def on_progress(event: str, case_id: str | None, done: int, total: int) -> None:
                if event == "plan":
                    progress.update(task, total=total)
                elif event == "case":
                    progress.update(task, completed=done, last=f"case {esc(case_id)}")
                elif event == "failed":
                    progress.update(task, completed=done, last=f"[red]case {esc(case_id)} failed[/]")

            summary = ingest_folder(
                data,
                store=store,
                liver_labels=labels,
                n_folds=folds,
                fold_seed=fold_seed,
                workers=workers,
                on_progress=on_progress,
            )
        console.print(
            f"{esc(store)}: {summary.cases} cases ({summary.train_cases} train, {summary.test_cases} test; "
            f"{len(summary.ingested)} ingested, {len(summary.unchanged)} unchanged), "
            f"{summary.slices} slices, {summary.liver_slices} with liver; "
            f"read {_human_bytes(summary.bytes_read)}, stored {_human_bytes(summary.bytes_stored)}, "
            f"{summary.seconds:.1f} s",
            highlight=False,
            soft_wrap=True,
        )
        if summary.failures:
            for line in summary.failures:
                print_error(line)
            raise LiverctlError(
                f"{len(summary.failures)} problem(s) above; those cases were skipped, every other case is in the store"
            )


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
    app.command("ingest")(ingest)

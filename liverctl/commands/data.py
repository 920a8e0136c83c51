"""`liverctl synth` and `liverctl ingest`: thin commands over liverctl.data.synth and liverctl.data.ingest."""

from __future__ import annotations

from pathlib import Path

import typer

from liverctl.commands._common import (
    ProgressBar,
    console,
    err_console,
    guarded,
    print_error,
    progress_bar,
)
from liverctl.disk import human_bytes
from liverctl.plural import agree, plural
from liverctl.printable import esc


def synth(
    out: Path = typer.Argument(..., metavar="OUT", help="Folder to write the dataset into (created if missing)."),
    *,
    cases: int = typer.Option(8, "--cases", help="Training cases (volume + label)."),
    test_cases: int = typer.Option(2, "--test-cases", help="Test cases (labels go to OUT/test_labels/)."),
    size: int = typer.Option(512, "--size", help="In-plane size in pixels (size x size)."),
    slices: int = typer.Option(150, "--slices", help="Slices per volume."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed writes the same bytes."),
    workers: int = typer.Option(None, "--workers", help="Processes (default: all cores; fewer where memory is short)."),
) -> None:
    """Write a synthetic CT dataset (phantom abdomen with a liver) in the competition layout."""
    with guarded(log=True):
        import time

        from liverctl.data.synth import write_synthetic_dataset

        started = time.perf_counter()
        with progress_bar() as bar:
            bar.stage("synth", total=cases + test_cases)
            result = write_synthetic_dataset(
                out, cases=cases, test_cases=test_cases, size=size, slices=slices, seed=seed, workers=workers,
                on_case=lambda case_id: bar.update(advance=1, last=f"case {esc(case_id)}"),
            )
        console.print(
            f"wrote {plural(result.train_cases, 'training case')} and {plural(result.test_cases, 'test case')} "
            f"({size}x{size}x{slices}) to {esc(out)}: {human_bytes(result.bytes_written)} "
            f"in {time.perf_counter() - started:.1f} s"
        )


def ingest(
    sources: list[str] = typer.Argument(
        ...,
        metavar="SOURCE",
        help="Data folders, each in the competition's, LiTS, Decathlon (AMOS22 too), nnU-Net raw, TotalSegmentator, "
        "BTCV or FLARE22 layout; "
        "NAME=PATH names one. The first source of a new store is its main source; the others are extra "
        "training data.",
    ),
    *,
    store: Path = typer.Option(Path("store/liver.zarr"), "--store", help="Zarr store to create or update."),
    liver_labels: list[str] = typer.Option(
        None,
        "--liver-labels",
        help="Label values that mean liver: 1,2 for every source without a dataset.json, NAME=1,2 for one "
        "source (repeat for several). Default: the source's dataset.json; a source the store holds: the labels "
        "it was ingested with; TotalSegmentator: 1; competition layout: any value > 0.",
    ),
    layout: list[str] = typer.Option(
        None, "--layout", help="Force a layout (competition, lits, decathlon, nnunet, totalseg, btcv, flare), or NAME=LAYOUT for one."
    ),
    extra_in_folds: bool = typer.Option(
        False, "--extra-in-folds", help="Deal the extra sources' training cases into the folds (default: "
        "trained on, never validated on)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what each source holds; write nothing."),
    folds: int = typer.Option(
        None, "--folds", help="Patient-level folds for cross-validation (2 to 128; default: the store's, 5 for "
        "a new store). Another count than the store's deals every case anew."
    ),
    fold_seed: int = typer.Option(None, "--fold-seed", help="Seed of the fold assignment (default: the store's, "
                                  "0 for a new store)."),
    workers: int = typer.Option(None, "--workers", help="Processes (default: all cores)."),
    verify: bool = typer.Option(
        False, "--verify", help="Also read every chunk file of the cases already in the store and compare it with "
        "the checksum ingest recorded (bits flipped in a copy); a damaged case is named and ingested again."
    ),
) -> None:
    """Ingest NIfTI folders into the Zarr store (atomic per case, resumable, parallel)."""
    with guarded(log=not dry_run):
        from liverctl.data.ingest import ingest_sources
        from liverctl.data.sources.plan import parse_layout_option, parse_liver_labels_option, plan_sources

        labels = parse_liver_labels_option(liver_labels)
        layouts = parse_layout_option(layout)
        if dry_run and verify:
            from liverctl.errors import LiverctlError

            raise LiverctlError(f"--verify rebuilds the damaged cases it finds and --dry-run writes nothing; to check "
                                f"the store without writing, run `liverctl verify --store {store}`")
        if dry_run:
            from liverctl.data.ingest import planned_empty_folds_note, planned_folds

            folds_line = planned_folds(store, folds, fold_seed)  # a bad --folds is the dry run's one line too
            plan = plan_sources(sources, store, labels, layouts, extra_in_folds)
            _print_plan(plan, store, folds_line, planned_empty_folds_note(plan, store, folds))
            return
        with progress_bar() as bar:
            bar.stage("ingest")
            summary = ingest_sources(
                sources, store, liver_labels=labels, layouts=layouts, extra_in_folds=extra_in_folds,
                n_folds=folds, fold_seed=fold_seed, workers=workers, on_progress=_ingest_progress(bar), verify=verify,
            )
        _print_summary(summary, store)


def verify(
    store: Path = typer.Option(Path("store/liver.zarr"), "--store", help="Zarr store to verify."),
) -> None:
    """Read every chunk file of the store and compare it with the checksum ingest recorded (a copy between machines
    or Kaggle datasets that flipped bits); reads only. `liverctl ingest SOURCE --verify` also rebuilds damaged cases."""
    with guarded():
        from liverctl.data.store_check import unverifiable_note, verify_store
        from liverctl.errors import LiverctlError

        with progress_bar() as bar:
            bar.stage("verify")
            result = verify_store(store, on_case=lambda case_id, total: bar.update(
                advance=1, total=total, last=f"case {esc(case_id)}"))
        console.print(
            f"{esc(store)}: verified {plural(result.cases, 'case')}, every chunk file read "
            f"({human_bytes(result.bytes_read)}) against the checksum ingest recorded: "
            + (f"{len(result.damaged)} damaged" if result.damaged else "no damage found")
            + (f", {len(result.unverifiable)} without checksums (note below)" if result.unverifiable else ""),
            highlight=False,
            soft_wrap=True,
        )
        if result.unverifiable:
            err_console.print(f"[bold yellow]note:[/] {esc(unverifiable_note(store, result.unverifiable))}",
                              highlight=False, soft_wrap=True)
        for damage in result.damaged.values():
            print_error(str(damage))
        if result.damaged:
            n = len(result.damaged)
            raise LiverctlError(
                f"{plural(n, 'damaged case')} above; run `liverctl ingest SOURCE --store {store} --verify` with "
                f"the data {agree(n, 'it was', 'they were')} ingested from to rebuild {agree(n, 'it', 'them')}"
            )
        if result.problem is not None:
            raise LiverctlError(result.problem)


def _ingest_progress(bar: ProgressBar):
    """`on_progress` of `ingest_sources`, shown on `bar`."""

    def on_progress(event: str, case_id: str | None, done: int, total: int) -> None:
        if event == "plan":
            bar.update(total=total)
        elif event == "case":
            bar.update(done=done, last=f"case {esc(case_id)}")
        elif event == "failed":
            bar.update(done=done, last=f"[red]case {esc(case_id)} failed[/]")

    return on_progress


def _print_summary(summary, store: Path) -> None:
    """Per source (when there are several), the store, notes and failures of an ingest run; `LiverctlError`
    (exit code 2) when some case failed."""
    from liverctl.errors import LiverctlError

    if len(summary.sources) > 1:
        for name, c in summary.sources.items():
            fold_text = " ".join(f"{_fold_name(f)}:{n}" for f, n in sorted(c.folds.items()))
            console.print(
                f"  {name} ({c.layout}, {c.role}): {c.train} train, {c.test} test; {c.ingested} ingested, "
                f"{c.unchanged} unchanged; folds {fold_text or '-'}",
                highlight=False,
                soft_wrap=True,
            )
    console.print(
        f"{esc(store)}: {plural(summary.cases, 'case')} ({summary.train_cases} train, {summary.test_cases} test; "
        f"{len(summary.ingested)} ingested, {len(summary.unchanged)} unchanged), "
        f"{plural(summary.slices, 'slice')}, {summary.liver_slices} with liver; "
        f"read {human_bytes(summary.bytes_read)}, stored {human_bytes(summary.bytes_stored)}, "
        f"{summary.seconds:.1f} s",
        highlight=False,
        soft_wrap=True,
    )
    if summary.verified is not None:
        console.print(
            f"verified {plural(summary.verified, 'case')} already in the store: every chunk file read "
            f"({human_bytes(summary.verified_bytes)}) against the checksum ingest recorded"
            + (f", {len(summary.unverifiable)} without checksums (note below)" if summary.unverifiable else ""),
            highlight=False,
            soft_wrap=True,
        )
    for line in summary.notes:
        err_console.print(f"[bold yellow]note:[/] {esc(line)}", highlight=False, soft_wrap=True)
    if summary.failures:
        for line in summary.failures:
            print_error(line)
        raise LiverctlError(
            f"{plural(len(summary.failures), 'problem')} above; those cases were skipped, every other case is in the store"
        )


def _fold_name(fold: int) -> str:
    from liverctl.data.schema import TRAIN_ONLY_FOLD

    return "train-only" if fold == TRAIN_ONLY_FOLD else "none" if fold < 0 else str(fold)


def _print_plan(plan, store: Path, folds_line: str, empty_folds: str | None = None) -> None:
    """What `ingest --dry-run` shows per source: layout, role, liver labels, ids, cases, problems; then the folds
    it would deal, and the note of folds it would leave empty; `LiverctlError` when a source has a problem."""
    for s in plan.sources:
        train = sum(1 for c in s.cases if c.split == "train")
        role = f"{s.role}, {'in the folds' if s.in_folds else 'train-only'}"
        labels = "any value > 0" if s.liver_labels is None else ",".join(map(str, s.liver_labels))
        console.print(f"[bold]{esc(s.name)}[/] ({esc(s.layout)}, {role}): {esc(s.path)}", highlight=False, soft_wrap=True)
        if s.error is None:
            console.print(f"  liver labels {labels} (from {esc(s.labels_from)})", highlight=False)
        console.print(
            f"  {plural(train, 'training case')} (volume + label pairs), {len(s.cases) - train} test; "
            f"{s.in_store} already in {esc(store)}" + (f"; ids prefixed {esc(repr(s.prefix))}" if s.prefix else ""),
            highlight=False,
            soft_wrap=True,
        )
        for note in s.skipped:
            console.print(f"  {esc(note)}", highlight=False, soft_wrap=True)
        if s.error:
            print_error(f"{s.name} ({s.path}): {s.error}")
        for line in s.problems:
            print_error(line)
    console.print(esc(folds_line), highlight=False, soft_wrap=True)
    if empty_folds:
        err_console.print(f"[bold yellow]note:[/] {esc(empty_folds)}", highlight=False, soft_wrap=True)
    problems = [s for s in plan.sources if s.error] + plan.problems
    if problems:
        from liverctl.errors import LiverctlError

        raise LiverctlError(f"{plural(len(problems), 'problem')} above; nothing was written (dry run)")


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
    app.command("ingest")(ingest)
    app.command("verify")(verify)

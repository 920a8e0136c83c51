"""The `submit` pipeline: trained run(s) + store -> post-processed masks -> checked submission CSV.

Order matters for the user's time: everything that can be wrong with the input (no checkpoint, a
config the store cannot serve, no test cases, a sample submission for other cases) is checked before
any slice is predicted. The CSV appears only at the end, whole and self-checked (`SubmissionWriter`),
and each run used gets a line in its `submissions.jsonl`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liverctl.device import resolve_device
from liverctl.errors import LiverctlError
from liverctl.infer.postprocess import (
    AUTO,
    AutoChoice,
    AutoSelector,
    check_spec,
    parse_postprocess,
    write_nifti_atomic,
)
from liverctl.infer.predict import RunModel, input_size, load_run_models, parse_tta, predict_cases
from liverctl.infer.submission import SubmissionSummary, SubmissionWriter, read_sample
from liverctl.runs.folder import SUBMISSIONS_FILE, checkpoint_path


@dataclass
class SubmitResult:
    summary: SubmissionSummary
    runs: list[str]
    store: str
    tta: str
    threshold: float
    post: str  # the spec applied (auto resolved)
    post_requested: str
    auto: AutoChoice | None
    device: str
    seconds: float
    masks_dir: str | None = None
    notes: list[str] = field(default_factory=list)


def _agreed(runs: Sequence[RunModel], section: str, key: str, default):
    """The runs' common setting, or the first run's (the caller may note the disagreement)."""
    values = [run.cfg.get(section, {}).get(key, default) for run in runs]
    return values[0], len({json.dumps(v) for v in values}) > 1


def check_runs_against_store(runs: Sequence[RunModel], store, case_ids: Sequence[str]) -> None:
    """One-line errors for a run whose config the store cannot serve."""
    for run in runs:
        data, model = run.cfg.get("data", {}), run.cfg.get("model", {})
        size = input_size(run.cfg)
        depth = int(model.get("encoder_depth", 5))
        if size % (2**depth):
            raise LiverctlError(
                f"data.input_size {size} is not a multiple of {2**depth} (encoder depth {depth})", path=run.run_dir
            )
        if data.get("normalize") == "minmax":
            for case in case_ids:
                stats = store.meta(case).get("stats") or {}
                if "min" not in stats or "max" not in stats:
                    raise LiverctlError(
                        f"run normalises per volume (minmax) but store case {case!r} has no min/max statistics; "
                        "re-ingest with this liverctl",
                        path=store.path,
                    )


def validation_cases(run: RunModel, store) -> list[str]:
    """The run's held-out cases, chosen as training chose them (fold, max_val_cases)."""
    from liverctl.runs.validation_cases import validation_cases as run_validation_cases

    return run_validation_cases(run.cfg, store)


def save_mask_nifti(mask: np.ndarray, meta: dict, target: Path) -> None:
    """Write a (X, Y, Z) mask as uint8 NIfTI on the source's grid (affine, and header when the file exists)."""
    import nibabel as nib

    header = None
    source = meta.get("source")
    if source and Path(source).is_file():
        try:
            header = nib.load(source).header.copy()
        except Exception:  # the affine from the store is enough
            header = None
    img = nib.Nifti1Image(mask.astype(np.uint8), np.asarray(meta["affine"], dtype=np.float64), header=header)
    img.set_data_dtype(np.uint8)
    write_nifti_atomic(img, target)


def check_out_path(out: Path) -> None:
    """Refuse an `--out` that cannot become the CSV (a folder, a place that cannot be written) up front,
    before minutes of prediction: a probe file is created and removed in its folder."""
    import tempfile

    if out.is_dir():
        raise LiverctlError("is a folder; --out takes the CSV's file name, e.g. submission.csv", path=out)
    folder = out.parent
    while not folder.exists() and folder != folder.parent:  # created at the end; check what exists now
        folder = folder.parent
    if not folder.is_dir():
        raise LiverctlError(f"cannot write the submission there: {folder} is not a folder", path=out)
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".liverctl-probe-"):
            pass
    except OSError as exc:
        raise LiverctlError(f"cannot write the submission in {folder}: {exc.strerror or exc}", path=out) from None


def _experiment_decisions(run_dirs, threshold, postprocess, note):
    """Experiments become their fold runs; their out-of-fold decisions fill the threshold and the
    post-processing the user left to the run (the first experiment's, when several disagree)."""
    from liverctl.experiment.ensemble import expand_runs

    expanded = expand_runs(run_dirs)
    if expanded.decisions:
        first = expanded.decisions[0]
        if len({(d["threshold"], d["post"]) for d in expanded.decisions}) > 1:
            note(f"experiments decided differently; using the first's threshold {first['threshold']:g}, post {first['post']}")
        if threshold is None:
            threshold = float(first["threshold"])
        if postprocess is None:
            postprocess = str(first["post"])
        note(f"{len(expanded.run_dirs)} fold run(s) from {len(expanded.experiments)} experiment(s); "
             f"out-of-fold decision: threshold {threshold:g}, post {postprocess}")
    return threshold, postprocess, expanded


def record_submission(run_dirs: Sequence[Path], record: dict) -> None:
    """Append one line to each run's submissions.jsonl."""
    line = json.dumps(record) + "\n"
    for run_dir in run_dirs:
        path = Path(run_dir) / SUBMISSIONS_FILE
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise LiverctlError(f"the CSV is written, but recording it in the run failed: {exc.strerror or exc}",
                                path=path) from None


def make_submission(
    run_dirs: Sequence[str | os.PathLike],
    out: str | os.PathLike = "submission.csv",
    *,
    store_path: str | os.PathLike | None = None,
    which: str = "best",
    sample_path: str | os.PathLike | None = None,
    tta: str | None = None,
    postprocess: str | None = None,
    threshold: float | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    save_masks: str | os.PathLike | None = None,
    on_stage: Callable[[str, int], None] | None = None,
    on_slices: Callable[[int], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> SubmitResult:
    """Predict the store's test cases with the run(s), post-process, write and check the CSV.

    `tta`, `postprocess`, `threshold`, `batch_size` default to the (first) run's `infer` / `post`
    config; the store defaults to the first run's `data.store`. Progress: `on_stage(name, slices)`
    announces a stage and its slice count, `on_slices(n)` advances it, `on_note(text)` reports a choice.
    """
    from liverctl.data.store import LiverStore

    started = time.perf_counter()
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        if on_note:
            on_note(text)

    if not run_dirs:
        raise LiverctlError("give at least one --run")
    check_out_path(Path(out))
    if tta is not None:
        parse_tta(tta)
    if postprocess is not None:
        check_spec(postprocess)
    sample = read_sample(sample_path) if sample_path else None
    device = str(resolve_device(device))
    threshold, postprocess, expanded = _experiment_decisions(run_dirs, threshold, postprocess, note)
    runs = load_run_models(expanded.run_dirs, which=which, device=device)

    store_path = Path(store_path or runs[0].cfg["data"].get("store", "store/liver.zarr"))
    store = LiverStore.open(store_path)
    test_ids = store.case_ids("test")
    if not test_ids:
        raise LiverctlError("store has no test cases; ingest a folder with test/ volumes", path=store_path)
    n_slices = {c: int(store.meta(c)["shape"][2]) for c in test_ids}
    if sample is not None:
        sample.check_cases(n_slices)
    check_runs_against_store(runs, store, test_ids)

    if tta is None:
        tta, differs = _agreed(runs, "infer", "tta", "none")
        if differs:
            note(f"runs differ in infer.tta; using the first run's {tta!r}")
    parse_tta(tta)
    if threshold is None:
        threshold, _ = _agreed(runs, "infer", "threshold", 0.5)
    threshold = float(threshold)
    if batch_size is None:
        batch_size, _ = _agreed(runs, "infer", "batch_size", 16)
    batch_size = max(1, int(batch_size))
    requested = postprocess if postprocess is not None else _agreed(runs, "post", "mode", "none")[0]
    requested = check_spec(str(requested))
    amp = str(_agreed(runs, "train", "amp", "auto")[0])
    predict_kwargs = dict(tta=tta, batch_size=batch_size, device=device, amp=amp, on_slices=on_slices)

    auto_choice = None
    if requested == AUTO:
        folds = {int(r.cfg["data"]["fold"]) for r in runs}
        if len(folds) > 1:
            note("runs hold out different folds: auto scores on the first run's validation cases, "
                 "which some of the other runs trained on")
        val_ids = validation_cases(runs[0], store)
        if on_stage:
            on_stage("validation (auto post-processing)", sum(int(store.meta(c)["shape"][2]) for c in val_ids) * len(runs))
        selector = AutoSelector()
        for case_id, probs in predict_cases(runs, store, val_ids, **predict_kwargs):
            selector.add_case(case_id, probs >= threshold, np.asarray(store.label(case_id)[...]) > 0)
        auto_choice = selector.choose()
        note(auto_choice.describe())
        spec = auto_choice.spec
    else:
        spec = requested
    post = parse_postprocess(spec)

    masks_dir = Path(save_masks) if save_masks else None
    writer = SubmissionWriter(Path(out), sample=sample, expected=n_slices)
    if on_stage:
        on_stage("test cases", sum(n_slices.values()) * len(runs))
    for case_id, probs in predict_cases(runs, store, test_ids, **predict_kwargs):
        mask = post(probs >= threshold)
        writer.add_case(case_id, mask)
        if masks_dir is not None:
            save_mask_nifti(mask, store.meta(case_id), masks_dir / f"{case_id}.nii.gz")
    summary = writer.close()

    result = SubmitResult(
        summary=summary,
        runs=[str(r.run_dir) for r in runs],
        store=str(store_path),
        tta=tta,
        threshold=threshold,
        post=spec,
        post_requested=requested,
        auto=auto_choice,
        device=device,
        seconds=time.perf_counter() - started,
        masks_dir=str(masks_dir) if masks_dir else None,
        notes=notes,
    )
    record_submission(
        [*(r.run_dir for r in runs), *expanded.experiments],
        {
            "ts": time.time(),
            "csv": str(summary.path.resolve()),
            "sha256": summary.sha256,
            "rows": summary.rows,
            "tta": tta,
            "post": spec,
            "post_requested": requested,
            "auto_scores": auto_choice.scores if auto_choice else None,
            "threshold": threshold,
            "which": which,
            "runs": [str(r.run_dir.resolve()) for r in runs],
            "checkpoints": [str(checkpoint_path(r.run_dir, which).resolve()) for r in runs],
            "experiments": [str(e.resolve()) for e in expanded.experiments],
            "store": str(store_path.resolve()),
            "sample": str(Path(sample_path).resolve()) if sample_path else None,
        },
    )
    return result

"""The `submit` pipeline: trained run(s) + store -> post-processed masks -> checked submission CSV.

Order matters for the user's time: everything that can be wrong with the input (no checkpoint, a
config the store cannot serve, no test cases, a sample submission for other cases) is checked before
any slice is predicted. The CSV appears only at the end, whole and self-checked (`SubmissionWriter`),
and so do the NIfTI masks of `--save-masks` (written in a hidden folder beside it, `files.staged_folder`);
each run used gets a line in its `submissions.jsonl`.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.config import check_threshold
from liverctl.device import out_of_memory_in_one_line, resolve_device
from liverctl.disk import NOT_WRITABLE, os_error_behind
from liverctl.errors import LiverctlError
from liverctl.files import check_output_file, check_output_folder, staged_folder
from liverctl.infer.postprocess import (
    AUTO,
    AutoChoice,
    AutoSelector,
    Postprocess,
    check_spec,
    parse_postprocess,
    write_nifti_atomic,
)
from liverctl.infer.predict import RunModel, input_size, parse_tta, predict_cases
from liverctl.infer.submission import SubmissionSummary, SubmissionWriter, check_sample_path, read_sample
from liverctl.plural import agree, plural
from liverctl.printable import quoted
from liverctl.runs.folder import PENDING_SUBMISSION_FILE, SUBMISSIONS_FILE, checkpoint_path, run_store
from liverctl.runs.submissions import write_pending


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
    weights: list[float] | None = None  # each run's weight in the mean, where they differ (None: the plain mean)


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
                        f"run normalises per volume (minmax) but store case {quoted(case)} has no min/max statistics; "
                        "re-ingest with this liverctl",
                        path=store.path,
                    )


def validation_cases(run: RunModel, store, note: Callable[[str], None] = lambda text: None) -> list[str]:
    """The run's held-out cases, chosen as training chose them (fold, max_val_cases); LiverctlError when the
    store holds out a case the run's checkpoint records it trained on (`checked_validation_cases`)."""
    from liverctl.runs.validation_cases import checked_validation_cases

    cases, remark = checked_validation_cases(run.cfg, run.cases, store, run.checkpoint)
    if remark is not None:
        note(remark)
    return cases


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
    """Refuse an `--out` that cannot become the CSV up front, before minutes of prediction."""
    check_output_file(out, what="the submission", option="--out", folder_hint="--out takes the CSV's file name, e.g. submission.csv")


def _experiment_decisions(run_dirs, threshold, postprocess, note, which="best", weights=None):
    """Experiments become their fold runs (each --run's share of the mean split among them: `expand_runs`); their
    out-of-fold decisions fill the threshold and the post-processing the user left to the run (the first
    experiment's, when several disagree). The note says which of the two came from the decision and what the
    decision was not made on, and each member's weight where they differ."""
    from liverctl.experiment.ensemble import expand_runs

    expanded = expand_runs(run_dirs, which, weights)
    for text in expanded.notes:
        note(text)
    if (text := expanded.weights_note()) is not None:
        note(text)
    if expanded.decisions:
        first = expanded.decisions[0]
        if len({(d["threshold"], d["post"]) for d in expanded.decisions}) > 1:
            note(f"experiments decided differently; using the first's threshold {first['threshold']:g}, post {first['post']}")
        used = []
        if threshold is None:
            threshold = float(first["threshold"])
        else:
            used.append(f"--threshold {threshold:g}")
        if postprocess is None:
            postprocess = str(first["post"])
        elif str(postprocess).strip().lower() == AUTO:  # auto on one fold's validation cases, which the
            postprocess = str(first["post"])            # other folds trained on: the decision is auto done right
            note("--postprocess auto: an experiment's out-of-fold decision is that choice, made on cases no "
                 "fold trained on")
        else:
            used.append(f"--postprocess {postprocess}")
        folds = sum(1 for r in expanded.run_dirs if any(r.parent == e for e in expanded.experiments))
        text = (f"{plural(folds, 'fold run')} from {plural(len(expanded.experiments), 'experiment')}; out-of-fold decision: "
                f"threshold {first['threshold']:g}, post {first['post']}")
        if used:
            text += f" ({' and '.join(used)} given: used instead)"
        note(text)
        if first.get("caution") and len(used) < 2:  # what the decision gave is used: say how thin it is
            note(first["caution"])
        if which != "best":
            note(f"the decision was made on the folds' best checkpoints; --checkpoint {which} predicts with others")
        if len(expanded.run_dirs) > folds:
            others = len(expanded.run_dirs) - folds
            note(f"{plural(others, 'other run')} {agree(others, 'joins', 'join')} the ensemble: the decision was made "
                 f"without {agree(others, 'it', 'them')}")
    return threshold, postprocess, expanded


def record_submission(run_dirs: Sequence[Path], record: dict, note: Callable[[str], None] | None = None) -> None:
    """Append one line to each run's submissions.jsonl, then remove this submit's journal there
    (`runs.submissions.write_pending`). A run folder that cannot be written to (one attached read-only, as
    /kaggle/input is) gets a `note` instead: the CSV is whole, only `liverctl runs` misses it."""
    from liverctl.runs.submissions import append_line, record_line

    unwritable: list[tuple[Path, str]] = []
    for run_dir in run_dirs:
        path = Path(run_dir) / SUBMISSIONS_FILE
        try:
            append_line(path, record_line(record))
        except (OSError, LiverctlError) as exc:  # LiverctlError: a hard-linked file not unshared (unshare_hard_link)
            cause = os_error_behind(exc)
            if note is not None and cause is not None and cause.errno in NOT_WRITABLE:
                unwritable.append((path, cause.strerror or str(cause)))
                continue
            if not isinstance(exc, OSError):
                raise
            raise LiverctlError(f"the CSV is written, but recording it in the run failed: {exc.strerror or exc}",
                                path=path) from None
        finally:  # recorded, or never to be: the journal has done its work
            with contextlib.suppress(OSError):
                (Path(run_dir) / PENDING_SUBMISSION_FILE.format(pid=os.getpid())).unlink(missing_ok=True)
    if unwritable:  # one line for an experiment's folds too
        (first, why), more = unwritable[0], len(unwritable) - 1
        where = f"{first} and {more} more" if more else str(first)
        note(f"note: {where}: not recorded ({why}); `liverctl runs` will not show this submission's score "
             f"for {'these runs' if more else 'the run'}")


@dataclass
class InferSettings:
    """How the test cases are predicted: the options given, else the (first) run's config."""

    tta: str
    threshold: float
    batch_size: int
    post_requested: str  # a spec, or `auto`
    amp: str
    cpu_threads: int = 0  # 0: chosen by timing (liverctl.infer.cpu)
    cpu_channels_last: bool = False


def resolve_settings(runs: Sequence[RunModel], note: Callable[[str], None], *, tta: str | None,
                     threshold: float | None, batch_size: int | None, postprocess: str | None) -> InferSettings:
    """The options given, else the runs' `infer` / `post` / `train.amp` config (the first run's where they
    differ; a differing TTA is noted)."""
    if tta is None:
        tta, differs = _agreed(runs, "infer", "tta", "none")
        if differs:
            note(f"runs differ in infer.tta; using the first run's {quoted(tta)}")
    parse_tta(tta)
    if threshold is None:
        threshold, _ = _agreed(runs, "infer", "threshold", 0.5)
    if batch_size is None:
        batch_size, _ = _agreed(runs, "infer", "batch_size", 16)
    requested = postprocess if postprocess is not None else _agreed(runs, "post", "mode", "none")[0]
    return InferSettings(tta=tta, threshold=float(threshold), batch_size=max(1, int(batch_size)),
                         post_requested=check_spec(str(requested)), amp=str(_agreed(runs, "train", "amp", "auto")[0]),
                         cpu_threads=max(0, int(_agreed(runs, "infer", "cpu_threads", 0)[0])),
                         cpu_channels_last=bool(_agreed(runs, "infer", "cpu_channels_last", False)[0]))


@dataclass
class CasePredictor:
    """The runs, the store and the settings every prediction of one submission uses."""

    runs: list[RunModel]
    store: Any
    settings: InferSettings
    device: str
    on_slices: Callable[[int], None] | None = None
    weights: list[float] | None = None  # each run's weight in the mean (None: equal)

    def predict(self, case_ids: Sequence[str]) -> Iterator[tuple[str, np.ndarray]]:
        """(case id, ensemble-mean probabilities (X, Y, Z) float32), one case at a time."""
        s = self.settings
        return predict_cases(self.runs, self.store, case_ids, weights=self.weights, tta=s.tta, batch_size=s.batch_size, device=self.device,
                             amp=s.amp, cpu_threads=s.cpu_threads, channels_last=s.cpu_channels_last,
                             on_slices=self.on_slices)

    def slices(self, case_ids: Sequence[str]) -> int:
        """Forward slices predicting `case_ids` takes (every slice, once per run): the progress total."""
        return sum(int(self.store.meta(c)["shape"][2]) for c in case_ids) * len(self.runs)


class _Notes(list):
    """The choices made for the user, kept for the result and passed on to `on_note` as they come."""

    def __init__(self, on_note: Callable[[str], None] | None):
        super().__init__()
        self.on_note = on_note

    def __call__(self, text: str) -> None:
        self.append(text)
        if self.on_note:
            self.on_note(text)


def _memory_advice(device: str, batch_size: int) -> tuple[str, str]:
    """(what ran out of memory, what to do) for `out_of_memory_in_one_line`: on a GPU the batch of slices per
    forward pass is what to lower; the CPU takes one slice per pass (`liverctl.infer.cpu`)."""
    if str(device).startswith("cuda"):
        return f"prediction at --batch-size {batch_size}", "lower --batch-size (its default is the run's infer.batch_size)"
    return f"prediction on {device}", "free memory for it (other programs) or predict on a GPU (--device cuda)"


def check_request(run_dirs: Sequence, out: Path, tta: str | None, postprocess: str | None,
                  threshold: float | None = None, batch_size: int | None = None) -> None:
    """What can be checked before loading anything: some run, a writable `--out`, known TTA and post names,
    a threshold between 0 and 1, a batch of at least one slice."""
    if not run_dirs:
        raise LiverctlError("give at least one --run")
    check_out_path(out)
    if threshold is not None:
        check_threshold(threshold, "--threshold")
    if batch_size is not None and batch_size < 1:
        raise LiverctlError(f"--batch-size must be at least 1, not {batch_size}")
    if tta is not None:
        parse_tta(tta)
    if postprocess is not None:
        check_spec(postprocess)


def open_test_store(runs: Sequence[RunModel], store_path: str | os.PathLike | None,
                    sample_path: str | os.PathLike | None, note: Callable[[str], None] = lambda text: None):
    """-> (store, its path, test case id -> slice count, the sample submission or None); the store defaults to
    the first run's `data.store`, with a `note` where that store holds none of the cases the run trained on.

    Fails in one line when the store has no test cases, the sample names other slices (read only as far as
    the store's test slices go: `read_sample`), or a run's config cannot be served by the store.
    """
    from liverctl.data.store import LiverStore

    given = store_path is not None
    if not given:
        store_path = run_store(runs[0].cfg["data"].get("store", "store/liver.zarr"), runs[0].run_dir)
    store_path = Path(store_path)
    store = LiverStore.open(store_path)
    if not given and (remark := _another_store_note(runs[0], store)) is not None:
        note(remark)
    test_ids = store.case_ids("test")
    if not test_ids:
        raise LiverctlError("store has no test cases; ingest a folder with test/ volumes", path=store_path)
    n_slices = {c: int(store.meta(c)["shape"][2]) for c in test_ids}
    sample = read_sample(sample_path, n_slices) if sample_path else None
    if sample is not None:
        sample.check_cases(n_slices)
    check_runs_against_store(runs, store, test_ids)
    return store, store_path, n_slices, sample


def _another_store_note(run: RunModel, store) -> str | None:
    """What to say where the store a run's relative data.store names from here holds none of the cases the run
    trained on: from another project's folder, `submit --run ../projA/runs/x1` predicted the test cases of the
    folder's own store/liver.zarr without a word (the folder you are in decides: `run_store`)."""
    trained = run.cases.get("training") if isinstance(run.cases, dict) else None
    if not isinstance(trained, list) or not trained or set(map(str, trained)) & set(store.case_ids("train")):
        return None
    return (f"note: {store.path} holds none of the {plural(len(trained), 'case')} run {run.run_dir.name} trained on: it is "
            "not the store the run was trained on; its test cases are predicted (pass --store to choose the store)")


def choose_auto_post(predictor: CasePredictor, note: Callable[[str], None],
                     on_stage: Callable[[str, int], None] | None = None) -> AutoChoice:
    """Resolve `auto`: score the candidate clean-ups on the first run's validation cases."""
    runs, store = predictor.runs, predictor.store
    if len({int(r.cfg["data"]["fold"]) for r in runs}) > 1:
        note("runs hold out different folds: auto scores on the first run's validation cases, "
             "which some of the other runs trained on")
    val_ids = validation_cases(runs[0], store, note)
    if on_stage:
        on_stage("validation (auto post-processing)", predictor.slices(val_ids))
    selector = AutoSelector()
    for case_id, probs in predictor.predict(val_ids):
        pred = probs >= predictor.settings.threshold
        del probs  # the case's float32 volume, gone before its label is read
        selector.add_case(case_id, pred, store.read_label_volume(case_id) > 0)
    choice = selector.choose()
    note(choice.describe())
    return choice


def predict_test_cases(predictor: CasePredictor, post: Postprocess, writer: SubmissionWriter,
                       masks_dir: Path | None = None, on_stage: Callable[[str, int], None] | None = None,
                       before_rename: Callable[[SubmissionSummary], None] | None = None) -> SubmissionSummary:
    """Predict, threshold and clean every case the writer expects, then write the CSV (and NIfTI masks;
    `before_rename`: `SubmissionWriter.close`'s). A post-processing that would empty a case's mask whatever is
    predicted is refused before any prediction."""
    case_ids = list(writer.expected or {})
    for case_id in case_ids:
        post.check_volume(int(np.prod(predictor.store.meta(case_id)["shape"], dtype=np.int64)),
                          f"test case {quoted(case_id)}")
    if on_stage:
        on_stage("test cases", predictor.slices(case_ids))
    for case_id, probs in predictor.predict(case_ids):
        mask = probs >= predictor.settings.threshold
        del probs  # the case's float32 volume, gone before cleaning and encoding (a long case: 0.9 GB)
        mask = post(mask)
        writer.add_case(case_id, mask)
        if masks_dir is not None:
            save_mask_nifti(mask, predictor.store.meta(case_id), masks_dir / f"{case_id}.nii.gz")
    return writer.close(before_rename)


def submission_record(result: SubmitResult, which: str, experiments: Sequence[Path],
                      sample_path: str | os.PathLike | None, runs: Sequence[RunModel] = ()) -> dict:
    """The line `record_submission` appends to each run's submissions.jsonl. `members`: each run's checkpoint as
    loaded (its sha256, epoch and save time), so that `liverctl runs` can tell a submission of the run's own
    checkpoint from one of an ensemble it was part of, and from one of a checkpoint since replaced."""
    summary = result.summary
    return {
        "ts": time.time(),
        "csv": str(summary.path.resolve()),
        "sha256": summary.sha256,
        "rows": summary.rows,
        "tta": result.tta,
        "post": result.post,
        "post_requested": result.post_requested,
        "auto_scores": result.auto.scores if result.auto else None,
        "threshold": result.threshold,
        "which": which,
        "runs": [str(Path(r).resolve()) for r in result.runs],
        "checkpoints": [str(checkpoint_path(Path(r), which).resolve()) for r in result.runs],
        "ensemble": len(result.runs) > 1,
        "weights": result.weights,  # None: every run the same weight
        "members": [{"run": str(Path(r.run_dir).resolve()), "checkpoint": str(r.checkpoint.resolve()),
                     "sha256": r.sha256, "epoch": r.epoch, "saved_at": r.saved_at} for r in runs],
        "experiments": [str(e.resolve()) for e in experiments],
        "store": str(Path(result.store).resolve()),
        "sample": str(Path(sample_path).resolve()) if sample_path else None,
        "device": result.device,
        "seconds": round(result.seconds, 3),  # load, predict, post-process, write and check: the whole submit
    }


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
    weights: Sequence[float] | None = None,
    on_stage: Callable[[str, int], None] | None = None,
    on_slices: Callable[[int], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> SubmitResult:
    """Predict the store's test cases with the run(s), post-process, write and check the CSV.

    `tta`, `postprocess`, `threshold`, `batch_size` default to the (first) run's `infer` / `post`
    config; the store defaults to the first run's `data.store`. `weights`: one per run folder given, an
    experiment's split among its folds (default: equal, `expand_runs`). Progress: `on_stage(name, slices)`
    announces a stage and its slice count, `on_slices(n)` advances it, `on_note(text)` reports a choice.
    """
    started = time.perf_counter()
    note = _Notes(on_note)
    check_request(run_dirs, Path(out), tta, postprocess, threshold, batch_size)
    if save_masks:
        check_output_folder(save_masks, what="the NIfTI masks", option="--save-masks")
    if sample_path:
        check_sample_path(sample_path)  # read once the store says how many ids it can have (open_test_store)
    device = str(resolve_device(device))
    threshold, postprocess, expanded = _experiment_decisions(run_dirs, threshold, postprocess, note, which, weights)
    runs = expanded.load_models(which, device)
    store, store_path, n_slices, sample = open_test_store(runs, store_path, sample_path, note)
    settings = resolve_settings(runs, note, tta=tta, threshold=threshold, batch_size=batch_size, postprocess=postprocess)
    predictor = CasePredictor(runs, store, settings, device, on_slices, expanded.weights())
    fits = _memory_advice(device, settings.batch_size)
    with out_of_memory_in_one_line(*fits):
        auto = choose_auto_post(predictor, note, on_stage) if settings.post_requested == AUTO else None
    spec = auto.spec if auto else settings.post_requested
    masks_dir = Path(save_masks) if save_masks else None
    writer = SubmissionWriter(Path(out), sample=sample, expected=n_slices)
    folders = [*(r.run_dir for r in runs), *expanded.experiments]
    made: dict[str, Any] = {}

    def journal(summary: SubmissionSummary) -> None:  # the CSV is whole and checked, and about to take its place
        made["result"] = SubmitResult(
            summary=summary, runs=[str(r.run_dir) for r in runs], store=str(store_path), tta=settings.tta,
            threshold=settings.threshold, post=spec, post_requested=settings.post_requested, auto=auto,
            device=device, seconds=time.perf_counter() - started, masks_dir=str(masks_dir) if masks_dir else None,
            notes=list(note), weights=predictor.weights)
        made["record"] = submission_record(made["result"], which, expanded.experiments, sample_path, runs)
        write_pending(folders, made["record"])  # a kill from the rename to the append loses no submission

    with out_of_memory_in_one_line(*fits), \
            staged_folder(masks_dir) if masks_dir else contextlib.nullcontext() as staged:  # all the masks, or none
        predict_test_cases(predictor, parse_postprocess(spec), writer, staged, on_stage, journal)
    record_submission(folders, made["record"], note)
    return made["result"]

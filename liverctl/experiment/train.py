"""Training an experiment: the folds one after another under one time budget, each an ordinary run
folder (`fold-<k>/`, trained by `liverctl.train.loop.run_training`), then out-of-fold predictions and
the decisions. `experiment.json` is rewritten (atomically) after every step, so an interrupted
experiment says where it stopped and `resume_experiment` continues the unfinished fold, then the rest.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, pstdev
from typing import Any

from liverctl.config import check_config, read_recorded_config
from liverctl.errors import LiverctlError, NaNAbort
from liverctl.experiment import folder
from liverctl.experiment.folder import fold_dir, read_summary, write_summary
from liverctl.plural import agree, plural
from liverctl.printable import quoted
from liverctl.runs.checkpoint import read_sidecar
from liverctl.runs.folder import CONFIG_FILE, RunLock, checkpoint_path, refuse_read_only_resume, run_store
from liverctl.train.start import TrainRequest

# Share of the time limit kept back from training for the last out-of-fold prediction and the decisions.
OOF_RESERVE = 0.05


@dataclass(frozen=True)
class FoldOptions:
    """How the folds of an experiment train: the device, one time limit for all of them, the progress line,
    where the one-line news of each fold goes, and the progress of each fold's out-of-fold prediction
    (`oof.predict_fold`'s on_stage and on_slices)."""

    device: str = "auto"
    time_limit_s: float | None = None
    show_progress: bool = True
    say: Callable[[str], None] = lambda text: None
    on_stage: Callable[[str, int], None] | None = None
    on_slices: Callable[[int], None] | None = None


def fold_config(cfg: dict, fold: int) -> dict:
    out = copy.deepcopy(cfg)
    out["data"]["fold"] = int(fold)
    return out


def wants_experiment(request: TrainRequest) -> bool:
    """Whether `train` was asked for an experiment: `--folds`, or `--resume` naming an experiment folder."""
    return request.folds is not None or (bool(request.resume) and
                                          folder.find_experiment(request.resume, request.runs_dir) is not None)


def train_experiment(request: TrainRequest, *, say: Callable[[str], None] = lambda text: None,
                     on_stage: Callable[[str, int], None] | None = None,
                     on_slices: Callable[[int], None] | None = None) -> dict:
    """Start (`request.folds`) or continue (`request.resume`) an experiment; returns its summary. `on_stage`,
    `on_slices`: the progress of each fold's out-of-fold prediction (`FoldOptions`)."""
    if request.resume and request.folds is not None:
        raise LiverctlError("--folds starts a new experiment and --resume continues one; give one of them")
    options = FoldOptions(device=request.device, time_limit_s=request.time_limit_s,
                          show_progress=request.show_progress, say=say, on_stage=on_stage, on_slices=on_slices)
    if request.resume:
        if request.has_overrides:
            raise LiverctlError("--set / --store / --epochs cannot change an experiment on --resume; start a new one")
        exp_dir = folder.find_experiment(request.resume, request.runs_dir)
        if exp_dir is None:
            raise LiverctlError(f"--resume: no experiment {quoted(request.resume)} in {request.runs_dir}")
        refuse_read_only_resume(exp_dir, request.runs_dir, what="experiment")
        return resume_experiment(exp_dir, options)
    if not request.preset:
        raise LiverctlError("give --preset NAME with --folds (see `liverctl presets`)")
    return start_experiment(request.config(), request.runs_dir, request.name, request.folds or "all", options)


def start_experiment(
    cfg: dict,
    runs_root: str | Path,
    name: str | None,
    folds_text: str,
    options: FoldOptions = FoldOptions(),
) -> dict:
    """A new experiment `runs_root/<name>/` over the folds `folds_text` names; trains it. The first fold's
    config is checked (`liverctl.train.start.preflight`) before the folder exists: bad input leaves nothing."""
    from liverctl.data.store import LiverStore
    from liverctl.runs.checkpoint import require_room_for_checkpoints
    from liverctl.runs.folder import check_fresh, run_dir_for
    from liverctl.train import distributed
    from liverctl.train.start import check_model, preflight

    if distributed.from_env().enabled:
        raise LiverctlError("--folds under torchrun is not supported; train the experiment in one process")
    store = LiverStore.open(cfg["data"]["store"])
    folds = folder.parse_folds(folds_text, store)  # before the folder exists: bad input leaves nothing
    empty = folder.empty_folds(store) if folds_text.strip().lower() == "all" else []
    if empty:
        trained, cases = len(folds), len(folder.fold_assignment(store))
        options.say(f"note: {len(empty)} of the store's {plural(trained + len(empty), 'fold')} "
                    f"({', '.join(map(str, empty))}) {agree(len(empty), 'holds', 'hold')} no case: skipped; the "
                    f"{plural(trained, 'fold')} trained still {agree(trained, 'holds', 'hold')} each of the "
                    f"{plural(cases, 'case')} out once")
    preflight(fold_config(cfg, folds[0]), options.device)
    require_room_for_checkpoints(runs_root, check_model(cfg), runs=len(folds))
    exp_dir = run_dir_for(runs_root, name, f"{cfg['preset']}-cv")
    with RunLock(exp_dir):  # one writer per experiment, as per run (each fold's run folder is locked too)
        check_fresh(exp_dir, resumable=(exp_dir / folder.SUMMARY_FILE).is_file())
        write_summary(exp_dir, {
            "name": exp_dir.name,
            "preset": cfg.get("preset"),
            "store": str(cfg["data"]["store"]),
            "trained_in": _working_folder(),  # what a relative store is relative to (`run_folds`)
            "folds": folds,
            "empty_folds": empty,
            "case_folds": folder.fold_assignment(store),
            "config": cfg,
            "time_limit_s": options.time_limit_s,
            "created": time.time(),
            "status": "running",
            "fold_results": {},
        })
        return run_folds(exp_dir, options)


def _working_folder() -> str | None:
    """The folder this process runs in; None where it is gone (removed under the shell)."""
    try:
        return os.getcwd()
    except OSError:
        return None


def resume_experiment(exp_dir: str | Path, options: FoldOptions = FoldOptions()) -> dict:
    """Continue the unfinished fold of an experiment, then the rest (then the decisions)."""
    with RunLock(exp_dir):
        summary = read_summary(exp_dir)
        if summary.get("status") == "completed" and summary.get("decision"):
            raise LiverctlError("the experiment already completed all its folds; start a new one", path=exp_dir)
        return run_folds(Path(exp_dir), options)


def _training_done(run_dir: Path, cfg: dict) -> bool:
    last = read_sidecar(run_dir, "last") or {}
    return int(last.get("epoch") or 0) >= int(cfg["train"]["epochs"]) and not int(last.get("step_in_epoch") or 0)


def run_folds(exp_dir: Path, options: FoldOptions = FoldOptions()) -> dict:
    """Train (or resume) every fold not yet finished, predict its held-out cases, then decide."""
    from liverctl.data.store import LiverStore
    from liverctl.experiment import oof

    exp_dir = Path(exp_dir)
    summary = read_summary(exp_dir)
    # relative to the folder the experiment began in: from another, --resume said "no store here; create one with
    # `liverctl ingest`" of a store that is there
    store = LiverStore.open(run_store(summary["config"]["data"]["store"], exp_dir, experiment=True,
                                      trained_in=summary.get("trained_in")))
    folder.check_store_unchanged(summary, store, exp_dir)
    folds = _Folds(exp_dir=exp_dir, summary=summary, store=store, options=options)
    expected = experiment_cases(summary, store)
    for fold in summary["folds"]:
        entry = summary["fold_results"].setdefault(str(fold), {"run": fold_dir(exp_dir, fold).name})
        if entry.get("oof_done"):
            lost = oof.missing_cases(exp_dir, {c: f for c, f in expected.items() if f == fold})
            if not lost:
                continue
            options.say(f"fold {fold}: {_lost_text(lost)}; predicting {agree(len(lost), 'it', 'them')} again")
            entry["oof_done"] = False
        stopped = folds.train(fold, entry)
        if stopped is not None:
            return folds.finish(*stopped)
        with folds.stops_on_error(f"fold {fold}, out-of-fold prediction"):
            folds.predict(fold, entry)
    options.say("deciding threshold and post-processing on the pooled out-of-fold predictions")
    with folds.stops_on_error("deciding on the out-of-fold predictions"):
        summary.update(evaluate_experiment(exp_dir, summary, store))
    return folds.finish("completed")


@dataclass
class _Folds:
    """The folds of one `run_folds` call, under one time budget; `experiment.json` rewritten after each step."""

    exp_dir: Path
    summary: dict
    store: Any
    options: FoldOptions
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float | None:
        limit = self.options.time_limit_s
        return None if limit is None else limit - (time.monotonic() - self.started)

    def finish(self, status: str, message: str = "") -> dict:
        """Write the summary with its final status; returned with `path`, the folder (not written: the folder
        may be moved or renamed, and the experiment is wherever its folder is)."""
        self.summary["status"], self.summary["message"] = status, message
        self.summary["name"] = self.exp_dir.name
        write_summary(self.exp_dir, self.summary)
        return {**self.summary, "path": str(self.exp_dir)}

    @contextlib.contextmanager
    def stops_on_error(self, step: str) -> Iterator[None]:
        """An error or Ctrl-C in `step` ends the experiment as failed or interrupted, not still 'running'."""
        try:
            yield
        except (LiverctlError, KeyboardInterrupt) as exc:
            self.finish("failed" if isinstance(exc, LiverctlError) else "interrupted", f"{step}: {exc}")
            raise

    def train(self, fold: int, entry: dict) -> tuple[str, str] | None:
        """Train or resume the fold unless it is done; (status, message) when the experiment must stop."""
        from liverctl.train import loop

        # experiment.json's config as recorded, with keys added to the defaults since filled in (an experiment
        # begun before an upgrade), as a run's config.toml or checkpoint is read
        run_dir = fold_dir(self.exp_dir, fold)
        cfg = check_config(fold_config(self.summary["config"], fold), str(self.exp_dir / folder.SUMMARY_FILE))
        if (run_dir / CONFIG_FILE).is_file():
            folder.check_fold_config(self.exp_dir, self.summary, fold, read_recorded_config(run_dir / CONFIG_FILE),
                                     str(run_dir))
        if _training_done(run_dir, cfg):
            return None
        left = self.remaining()
        if left is not None and left <= 0:
            return "time_limit", f"the time limit ended before fold {fold}"
        resume = checkpoint_path(run_dir, "last").is_file()
        self.options.say(f"fold {fold}: {'resuming' if resume else 'training'} {run_dir}")
        entry["status"] = "running"
        write_summary(self.exp_dir, self.summary)
        budget = None if left is None else left - OOF_RESERVE * self.options.time_limit_s
        if budget is not None and budget <= 0:
            return "time_limit", f"the time limit ended before fold {fold}"
        try:
            with RunLock(run_dir):
                result = loop.run_training(cfg, run_dir, resume=resume, device=self.options.device,
                                           time_limit_s=budget, show_progress=self.options.show_progress)
        except (LiverctlError, KeyboardInterrupt) as exc:  # NaNAbort is a LiverctlError
            entry["status"] = ("nan_abort" if isinstance(exc, NaNAbort)
                               else "failed" if isinstance(exc, LiverctlError) else "interrupted")
            self.finish(entry["status"], f"fold {fold}: {exc}")
            raise
        entry.update(status=result["status"], best=result["best"], epochs_done=result["epochs_done"])
        if result["status"] != "completed":
            return result["status"], f"fold {fold} stopped: {result['status']}"
        entry["checkpoints"] = folder.checkpoint_hashes(run_dir)  # what the fold produced, checked by its readers
        return None

    def predict(self, fold: int, entry: dict) -> None:
        """The fold's held-out cases predicted with its best checkpoint (`oof.zarr`)."""
        from liverctl.experiment import oof

        run_dir = fold_dir(self.exp_dir, fold)
        if folder.recorded_checkpoint_sha256(self.summary, fold) is None:
            entry["checkpoints"] = folder.checkpoint_hashes(run_dir)  # trained before liverctl recorded them
        best = read_sidecar(run_dir, "best") or {}
        entry.update(status="completed", best=best.get("best") or entry.get("best"))
        self.options.say(f"fold {fold}: predicting its held-out cases with the best checkpoint")
        entry["oof_cases"] = oof.predict_fold(self.exp_dir, run_dir, fold, self.store, device=self.options.device,
                                              on_stage=self.options.on_stage, on_slices=self.options.on_slices,
                                              summary=self.summary)
        entry["oof_done"] = True
        write_summary(self.exp_dir, self.summary)


def cv_figures(summary: dict) -> dict:
    """Per-fold best volume Dice, mean and population std over the folds that have one (std: None for one fold,
    whose spread is no figure)."""
    per_fold = {}
    for fold in summary["folds"]:
        best = (summary["fold_results"].get(str(fold)) or {}).get("best") or {}
        if isinstance(best.get("volume_dice"), (int, float)):
            per_fold[str(fold)] = float(best["volume_dice"])
    values = list(per_fold.values())
    return {
        "folds": per_fold,
        "mean": mean(values) if values else None,
        "std": pstdev(values) if len(values) >= 2 else None,
    }


def experiment_cases(summary: dict, store) -> dict[str, int]:
    """Case -> fold of every case the experiment holds out: the cases of its folds (not of the store's others)."""
    folds = set(summary["folds"])
    return {case: fold for case, fold in folder.fold_assignment(store).items() if fold in folds}


def _lost_text(lost: list[str]) -> str:
    """"the out-of-fold predictions of 2 cases are missing (a, b)": what a resume or the evaluation says of them."""
    n = len(lost)
    shown = ", ".join(lost[:3]) + (", ..." if n > 3 else "")
    return (f"the out-of-fold {agree(n, 'prediction', 'predictions')} of {plural(n, 'case')} "
            f"{agree(n, 'is', 'are')} missing ({shown})")


def evaluate_experiment(exp_dir: Path, summary: dict, store) -> dict:
    """The experiment's cross-validation figures: cv (per-fold best), oof (pooled, config threshold, no
    post-processing) and the decision on the pooled OOF predictions (every option scored). The pool is exactly
    the cases of the experiment's folds, each predicted by the fold that held it out."""
    import numpy as np

    from liverctl.experiment import decide, oof

    cases = experiment_cases(summary, store)
    lost = oof.missing_cases(exp_dir, cases)
    if lost:
        raise LiverctlError(
            f"{_lost_text(lost)}; `liverctl train --resume {exp_dir}` predicts {agree(len(lost), 'it', 'them')} again",
            path=Path(exp_dir) / folder.OOF_STORE,
        )
    preferred = float(summary["config"]["infer"]["threshold"])
    liver = [float(store.meta(c).get("liver_voxels") or 0) for c in cases]
    posts = decide.post_candidates(float(np.median(liver)) if liver else 1.0)
    decision = decide.choose_decision(oof.iter_oof(exp_dir, store, cases), decide.threshold_candidates(preferred), posts)
    raw = decide.find_option(decision.options, preferred, "none") or {}
    train_only = sum(1 for f in store.folds().values() if f < 0)
    per_fold_oof = {}
    for fold in summary["folds"]:
        # volume Dice of the fold's own held-out cases (raw): the fold's share of the pooled figure
        members = [c for c, f in cases.items() if f == fold]
        per_fold_oof[str(fold)] = len(members)
    figures = {
        "cv": cv_figures(summary),
        "oof": {
            "cases": len(cases),
            "cases_per_fold": per_fold_oof,
            "train_only_cases": train_only,
            "threshold": preferred,
            "post": "none",
            "volume_dice": raw.get("volume_dice"),
            "slice_dice": raw.get("slice_dice"),
            "global_dice": raw.get("global_dice"),
            # said only where it holds: "0 train-only cases are never held out" told a user nothing
            "note": (f"out-of-fold predictions cover the cases in folds >= 0 only; {plural(train_only, 'train-only case')}"
                     f" (fold -2) {agree(train_only, 'is', 'are')} never held out") if train_only else None,
        },
        "decision": decision.to_json(),
    }
    figures["decision"]["caution"] = folder.decision_caution({**summary, **figures})  # None where it is not thin
    return figures

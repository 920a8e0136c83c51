"""`submit --run runs/<experiment>`: an experiment stands for all its fold runs and its decisions."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from liverctl.config import read_config
from liverctl.errors import LiverctlError
from liverctl.experiment.folder import (
    SUMMARY_FILE,
    check_fold_checkpoint,
    check_fold_config,
    fold_dir,
    is_experiment_dir,
    read_summary,
)
from liverctl.runs.folder import CONFIG_FILE


@dataclass
class ExpandedRuns:
    run_dirs: list[Path]
    experiments: list[Path] = field(default_factory=list)
    decisions: list[dict] = field(default_factory=list)  # one per experiment, in order
    notes: list[str] = field(default_factory=list)  # what could not be checked (an older experiment.json)
    fold_of: dict[Path, tuple[Path, dict, int]] = field(default_factory=dict)  # fold run -> (experiment, summary, k)

    def check_models(self, runs) -> None:
        """Each fold run's loaded checkpoint (`liverctl.infer.predict.RunModel`) holds out its fold with its
        experiment's config: a best.pt copied from another fold passes the check of the folder's config.toml, and
        an experiment without checkpoint records has no sha256 to catch it."""
        for run in runs:
            owner = self.fold_of.get(Path(run.run_dir))
            if owner is not None:
                exp_dir, summary, fold = owner
                check_fold_config(exp_dir, summary, fold, run.cfg, str(run.checkpoint))


def expand_runs(run_dirs: Sequence[str | os.PathLike], which: str = "best") -> ExpandedRuns:
    """Replace each experiment folder by its fold run folders (checked to agree with it: their config and the
    sha256 of their `which` checkpoint that experiment.json recorded); other run folders pass through. An
    experiment must have finished (its decision made)."""
    out = ExpandedRuns(run_dirs=[])
    given: dict[Path, str] = {}  # each run folder (resolved) -> the --run that brought it

    def add(run: Path, spec: str) -> None:
        key = run.resolve()
        if key in given:  # the mean of the ensemble would weigh it twice
            first = given[key]
            if first == spec:
                raise LiverctlError(f"--run {spec} is given twice; give each run once")
            raise LiverctlError(f"--run {first} and --run {spec} both hold the run {run}; give each run once")
        given[key] = spec
        out.run_dirs.append(run)

    for spec in run_dirs:
        path = Path(spec)
        if not is_experiment_dir(path):
            add(path, str(spec))
            continue
        summary = read_summary(path)
        decision = summary.get("decision")
        if summary.get("status") != "completed" or not isinstance(decision, dict):
            raise LiverctlError(
                f"experiment is not finished (status {summary.get('status')}); continue it with "
                f"`liverctl train --resume {path}`",
                path=path,
            )
        unrecorded = []
        for fold in summary["folds"]:
            run = fold_dir(path, fold)
            config = run / CONFIG_FILE
            if not config.is_file():
                raise LiverctlError(f"fold {fold} of the experiment has no run folder", path=run)
            check_fold_config(path, summary, fold, read_config(config), str(run))
            if not check_fold_checkpoint(path, summary, fold, which):
                unrecorded.append(str(fold))
            add(run, str(spec))
            out.fold_of[run] = (path, summary, fold)
        if unrecorded:
            out.notes.append(f"{path / SUMMARY_FILE} records no sha256 of the {which} checkpoint of fold(s) "
                             f"{', '.join(unrecorded)} (written before liverctl recorded them): those are checked "
                             "by their config only")
        out.experiments.append(path)
        out.decisions.append(usable_decision(decision, path / SUMMARY_FILE))
    return out


def usable_decision(decision: dict, where: Path) -> dict:
    """The decision with a threshold between 0 and 1 and a known post-processing spec (both normalised), else
    one line naming `where`: experiment.json is anyone's file, and submit applies its decision."""
    from liverctl.config import check_threshold
    from liverctl.infer.postprocess import check_spec

    try:
        threshold = check_threshold(decision.get("threshold"), "out-of-fold decision threshold")
        post = decision.get("post")
        if not isinstance(post, str):
            raise LiverctlError(f"out-of-fold decision post {post!r:.40} is not a post-processing spec such as 'none'")
        return {**decision, "threshold": threshold, "post": check_spec(post)}
    except LiverctlError as exc:
        raise LiverctlError(f"{exc} (the file is damaged or was edited by hand)", path=where) from None

"""`submit --run runs/<experiment>`: an experiment stands for all its fold runs and its decisions."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from liverctl.config import read_recorded_config
from liverctl.errors import LiverctlError
from liverctl.experiment.folder import (
    SUMMARY_FILE,
    check_fold_config,
    decision_caution,
    experiment_of_fold,
    fold_checkpoint_check,
    fold_dir,
    fold_number,
    is_experiment_dir,
    killed_text,
    read_summary,
    recorded_checkpoint_sha256,
    status_now,
)
from liverctl.plural import agree, plural
from liverctl.printable import QUOTE_LIMIT, one_line, quoted
from liverctl.runs.folder import CONFIG_FILE, checkpoint_path

FoldOwners = dict[Path, tuple[Path, dict, int]]  # fold run folder -> (its experiment, experiment.json, fold)


@dataclass
class ExpandedRuns:
    run_dirs: list[Path]
    experiments: list[Path] = field(default_factory=list)
    decisions: list[dict] = field(default_factory=list)  # one per experiment, in order
    notes: list[str] = field(default_factory=list)  # what could not be checked (an older experiment.json)
    fold_of: FoldOwners = field(default_factory=dict)
    shares: list[float] = field(default_factory=list)  # each run's share of the mean, one per run_dirs (sum 1)
    members: list[tuple[str, float, int]] = field(default_factory=list)  # each --run: its share, its folds (0: a run)
    weights_given: bool = False

    def weights(self) -> list[float] | None:
        """Each run's weight in the ensemble's mean (`shares`), or None where every run weighs the same: the plain
        mean, added in run order and divided by the count, as one run's own prediction is. The same up to rounding
        (`--weights 0.3,0.1` over a 3-fold experiment and a run: 0.3 / 0.4 / 3 is 0.25000000000000006) is the same."""
        if not self.shares or math.isclose(min(self.shares), max(self.shares), rel_tol=1e-9):
            return None
        return list(self.shares)

    def weights_note(self) -> str | None:
        """The members' shares where they differ or --weights set them: `ensemble weights: runs/cv 0.5 (5 folds, 0.1
        each), runs/x1 0.5`."""
        if self.weights() is None and not (self.weights_given and len(self.members) > 1):
            return None
        parts = [f"{spec} {share:.3g}" + (f" ({plural(folds, 'fold')}{f', {share / folds:.3g} each' if folds > 1 else ''})"
                                          if folds else "")
                 for spec, share, folds in self.members]
        return f"ensemble weights: {', '.join(parts)}"

    def load_models(self, which: str = "best", device: str = "cpu") -> list:
        """The runs' models (`liverctl.infer.predict.RunModel`), each fold run checked against its experiment
        (`load_checked_runs`)."""
        return load_checked_runs(self.run_dirs, which, device, self.fold_of)


def load_checked_runs(run_dirs: Sequence[Path], which: str, device: str, fold_of: FoldOwners) -> list:
    """`liverctl.infer.predict.load_run_models`, each fold run of an experiment (`fold_of`) checked against it: the
    bytes of its checkpoint against the sha256 experiment.json recorded when the fold finished, before they are
    parsed (a best.pt copied from another fold has the same config); then the config that checkpoint recorded
    against the experiment's (what catches such a copy where experiment.json records no sha256)."""
    from liverctl.infer.predict import load_run_models

    checks = {}
    for run, (exp_dir, summary, fold) in fold_of.items():
        check = fold_checkpoint_check(exp_dir, summary, fold, which)
        if check is not None:
            checks[run] = check
    runs = load_run_models(run_dirs, which=which, device=device, verify=checks)
    seen: dict[str, object] = {}
    for run in runs:
        owner = fold_of.get(Path(run.run_dir))
        if owner is not None:
            exp_dir, summary, fold = owner
            check_fold_config(exp_dir, summary, fold, run.recorded_cfg, str(run.checkpoint))
        first = seen.setdefault(run.sha256, run) if run.sha256 is not None else run
        if first is not run:  # a copy of a run (`cp -r runs/a runs/b`): the mean would weigh one model twice
            raise LiverctlError(f"is byte for byte {first.checkpoint} (sha256 {run.sha256[:12]}): a copy "
                                "of one run, which the ensemble would weigh twice; give that run once (--weights gives "
                                "a run more weight)", path=run.checkpoint)
    return runs


def fold_owners(run_dirs: Sequence[Path]) -> FoldOwners:
    """Those of `run_dirs` that are fold runs of an experiment (`<exp>/fold-<k>/`), each with its experiment."""
    owners: FoldOwners = {}
    summaries: dict[Path, dict] = {}
    for run in run_dirs:
        fold, exp_dir = fold_number(run), experiment_of_fold(run)
        if fold is None or exp_dir is None:
            continue
        if exp_dir not in summaries:
            summaries[exp_dir] = read_summary(exp_dir)
        if fold in summaries[exp_dir]["folds"]:
            owners[Path(run)] = (exp_dir, summaries[exp_dir], fold)
    return owners


def expand_runs(run_dirs: Sequence[str | os.PathLike], which: str = "best",
                weights: Sequence[float] | None = None) -> ExpandedRuns:
    """Replace each experiment folder by its fold run folders (their config.toml checked to agree with it; their
    `which` checkpoints are checked as they are loaded, `ExpandedRuns.load_models`); other run folders pass
    through. An experiment must have finished (its decision made).

    Each of `run_dirs` is one member of the ensemble, with its share of the mean: `weights` (one per member, made
    to sum to 1; default equal), an experiment's share split equally among its folds. A 5-fold experiment and one
    run weigh half and half, where counting the folds as members gave the run 1/6."""
    shares = member_shares(run_dirs, weights)
    out = ExpandedRuns(run_dirs=[], weights_given=weights is not None)
    given: dict[Path, str] = {}  # each run folder (resolved) -> the --run that brought it

    def add(run: Path, spec: str, share: float) -> None:
        key = run.resolve()
        if key in given:  # the mean of the ensemble would weigh it twice
            first = given[key]
            if first == spec:
                raise LiverctlError(f"--run {spec} is given twice; give each run once")
            raise LiverctlError(f"--run {first} and --run {spec} both hold the run {run}; give each run once")
        given[key] = spec
        out.run_dirs.append(run)
        out.shares.append(share)

    for spec, share in zip(run_dirs, shares, strict=True):
        path = Path(spec)
        if not is_experiment_dir(path):
            add(path, str(spec), share)
            out.members.append((str(spec), share, 0))
            continue
        summary = read_summary(path)
        decision = summary.get("decision")
        status = status_now(path, summary)
        if status == "running":
            raise LiverctlError(f"experiment is still being trained; submit it once it completes (`liverctl watch "
                                f"{path}` follows it)", path=path)
        if (killed := killed_text(path, summary, status)) is not None:
            raise LiverctlError(f"experiment is not finished: {killed}", path=path)
        if status != "completed" or not isinstance(decision, dict):
            why = one_line(summary.get("message"), QUOTE_LIMIT)
            raise LiverctlError(
                f"experiment is not finished (status {one_line(status, QUOTE_LIMIT)}{f': {why}' if why else ''}); "
                f"continue it with `liverctl train --resume {path}`",
                path=path,
            )
        unrecorded = []
        for fold in summary["folds"]:
            run = fold_dir(path, fold)
            config = run / CONFIG_FILE
            if not config.is_file():
                raise LiverctlError(f"fold {fold} of the experiment has no run folder", path=run)
            check_fold_config(path, summary, fold, read_recorded_config(config), str(run))
            if recorded_checkpoint_sha256(summary, fold, which) is None:
                unrecorded.append(str(fold))
            elif not checkpoint_path(run, which).is_file():  # it finished with one: say so before any loading
                raise LiverctlError(f"fold {fold} of the experiment has no {which} checkpoint",
                                    path=checkpoint_path(run, which))
            add(run, str(spec), share / len(summary["folds"]))
            out.fold_of[run] = (path, summary, fold)
        if unrecorded:
            n = len(unrecorded)
            out.notes.append(f"{path / SUMMARY_FILE} records no sha256 of the {which} checkpoint of "
                             f"{agree(n, 'fold', 'folds')} {', '.join(unrecorded)} (written before liverctl recorded "
                             f"them): {agree(n, 'it is checked by its', 'those are checked by their')} config only")
        out.experiments.append(path)
        out.members.append((str(spec), share, len(summary["folds"])))
        out.decisions.append({**usable_decision(decision, path / SUMMARY_FILE, config_threshold(summary)),
                              "caution": decision_caution(summary)})
    return out


def member_shares(members: Sequence, weights: Sequence[float] | None) -> list[float]:
    """Each member's share of the ensemble's mean: `weights` made to sum to 1 (each finite and above 0, one per
    member), else equal shares."""
    if weights is None:
        return [1.0 / len(members)] * len(members) if members else []
    if len(weights) != len(members):
        raise LiverctlError(f"--weights gives {plural(len(weights), 'weight')} for {plural(len(members), '--run')}: "
                            "give one weight per --run, in their order (an experiment is one --run)")
    for value in weights:
        if not (math.isfinite(value) and value > 0):
            raise LiverctlError(f"--weights {value:g}: each weight must be a number above 0 (leave a run out "
                                "rather than weigh it 0)")
    total = math.fsum(weights)
    return [value / total for value in weights]


def config_threshold(summary: dict) -> float | None:
    """The experiment config's `infer.threshold` (the decision's first candidate), None where it has no usable one."""
    from liverctl.config import check_threshold

    infer = summary["config"].get("infer")
    try:
        return check_threshold(infer.get("threshold"), "infer.threshold") if isinstance(infer, dict) else None
    except LiverctlError:
        return None


def usable_decision(decision: dict, where: Path, preferred: float | None = None) -> dict:
    """The decision with a threshold between 0 and 1 and a known post-processing spec (both normalised), both
    among what the decision tries (`decide.not_a_candidate`; `preferred`: the config's threshold), else one line
    naming `where`: experiment.json is anyone's file, and submit applies its decision."""
    from liverctl.config import check_threshold
    from liverctl.experiment.decide import not_a_candidate
    from liverctl.infer.postprocess import check_spec

    try:
        threshold = check_threshold(decision.get("threshold"), "out-of-fold decision threshold")
        post = decision.get("post")
        if not isinstance(post, str):
            raise LiverctlError(f"out-of-fold decision post {quoted(post, 40)} is not a post-processing spec such as 'none'")
        post = check_spec(post)
        problem = not_a_candidate(threshold, post, preferred)
        if problem:
            raise LiverctlError(problem)
        return {**decision, "threshold": threshold, "post": post}
    except LiverctlError as exc:
        raise LiverctlError(f"{exc} (the file is damaged or was edited by hand)", path=where) from None

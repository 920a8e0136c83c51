"""`liverctl train --folds ...` and `liverctl train --resume EXPERIMENT`: thin wrappers over
liverctl.experiment.train, called from `liverctl/commands/train.py` (not a command of its own)."""

from __future__ import annotations

from pathlib import Path

import typer

from liverctl.commands._common import console


def train_experiment(
    *,
    preset: str | None,
    overrides: list[str],
    folds: str | None,
    name: str | None,
    runs_dir: Path,
    resume: str | None,
    resume_dir: Path | None,
    device: str,
    time_limit_s: float | None,
    quiet: bool,
) -> None:
    """Start (`folds`) or continue (`resume_dir`) an experiment and print its cross-validation figures."""
    from liverctl.config import resolve_config
    from liverctl.errors import LiverctlError
    from liverctl.experiment.train import resume_experiment, start_experiment

    def say(text: str) -> None:
        console.print(text, highlight=False)

    if resume and folds is not None:
        raise LiverctlError("--folds starts a new experiment and --resume continues one; give one of them")
    if resume_dir is not None:
        if overrides:
            raise LiverctlError("--set / --store / --epochs cannot change an experiment on --resume; start a new one")
        summary = resume_experiment(resume_dir, device=device, time_limit_s=time_limit_s, show_progress=not quiet, say=say)
    else:
        if not preset:
            raise LiverctlError("give --preset NAME with --folds (see `liverctl presets`)")
        from liverctl.commands.train import preflight

        summary = start_experiment(
            resolve_config(preset, overrides), runs_dir, name, folds or "all", device=device,
            time_limit_s=time_limit_s, show_progress=not quiet, say=say, preflight=preflight,
        )
    print_experiment(summary, runs_dir)
    if summary["status"] == "interrupted":
        raise typer.Exit(130)


def print_experiment(summary: dict, runs_dir: Path) -> None:
    name = summary["name"]
    if summary["status"] != "completed":
        console.print(
            f"experiment {name}: {summary['status']} ({summary.get('message', '')}); "
            f"continue it with `liverctl train --resume {name} --runs-dir {runs_dir}`",
            highlight=False,
        )
        return
    cv, o, d = summary["cv"], summary["oof"], summary["decision"]
    per_fold = ", ".join(f"fold {f} {v:.4f}" for f, v in cv["folds"].items())
    console.print(f"completed experiment {name}: best volume Dice per fold {per_fold}; "
                  f"{cv['mean']:.4f} +- {cv['std']:.4f}", highlight=False)
    console.print(
        f"out-of-fold ({o['cases']} cases, threshold {o['threshold']:g}, no post-processing): "
        f"volume Dice {o['volume_dice']:.4f}, slice {o['slice_dice']:.4f}, global {o['global_dice']:.4f}; "
        f"{o['note']}",
        highlight=False,
    )
    console.print(
        f"decision on the out-of-fold predictions: threshold {d['threshold']:g}, post {d['post']} "
        f"(volume Dice {d['volume_dice']:.4f}; {len(d['options'])} options in {Path(runs_dir) / name}/experiment.json)",
        highlight=False,
    )

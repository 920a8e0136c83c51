"""What `liverctl train --folds ...` and `liverctl train --resume EXPERIMENT` print (the experiment's
cross-validation figures); `liverctl/commands/train.py` calls `liverctl.experiment.train.train_experiment`."""

from __future__ import annotations

from pathlib import Path

from liverctl.commands._common import console
from liverctl.experiment.folder import SUMMARY_FILE, decision_caution, spread_text
from liverctl.plural import plural
from liverctl.printable import esc


def print_experiment(summary: dict) -> None:
    exp_dir = Path(summary["path"])
    name = exp_dir.name
    if summary["status"] != "completed":
        console.print(
            f"experiment {esc(name)}: {summary['status']} ({esc(summary.get('message', ''))}); "
            f"continue it with `liverctl train --resume {esc(exp_dir)}`",
            highlight=False,
        )
        return
    cv, o, d = summary["cv"], summary["oof"], summary["decision"]
    per_fold = ", ".join(f"fold {f} {v:.4f}" for f, v in cv["folds"].items())
    # the mean and spread of one fold said nothing more: 'fold 0 0.0290; 0.0290 +- 0.0000'
    across = f"; {cv['mean']:.4f}{spread_text(cv)}" if len(cv["folds"]) > 1 else ""
    console.print(f"completed experiment {esc(name)}: best volume Dice per fold {per_fold}{across}", highlight=False)
    note = f"; {esc(o['note'])}" if o.get("note") else ""  # None where it has nothing to say (no train-only case)
    console.print(
        f"out-of-fold ({plural(o['cases'], 'case')}, threshold {o['threshold']:g}, no post-processing): "
        f"volume Dice {o['volume_dice']:.4f}, slice {o['slice_dice']:.4f}, global {o['global_dice']:.4f}{note}",
        highlight=False,
    )
    console.print(
        f"decision on the out-of-fold predictions: threshold {d['threshold']:g}, post {esc(d['post'])} "
        f"(volume Dice {d['volume_dice']:.4f}; {len(d['options'])} options in {esc(exp_dir / SUMMARY_FILE)})",
        highlight=False,
    )
    caution = decision_caution(summary)
    if caution:
        console.print(f"[yellow]{esc(caution)}[/]", highlight=False)

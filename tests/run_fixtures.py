"""Hand-made run folders for the `runs` / `report` tests: what `liverctl train` writes, without training.

`make_run` writes `config.toml`, `events.jsonl` (the kinds and fields of `liverctl/runs/events.py`),
`checkpoints/{last,best}.json` sidecars and, optionally, `submissions.jsonl` with the
`<csv>.scores.json` that `evaluate` leaves beside a submission. Timestamps are explicit so that
ordering and wall-time checks do not depend on the clock.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import tomli_w

from liverctl.config import resolve_config
from liverctl.infer.evaluate import scores_path


def make_config(preset: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The resolved config of `preset` (as `train` writes it) with dotted keys set as given, unchecked,
    e.g. {"loss.name": "tversky"}: a hand-made run may hold keys the current defaults lack."""
    cfg = resolve_config(preset)
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".", 1)
        cfg.setdefault(section, {})[key] = value
    return cfg


def dice_curve(epochs: int, start: float = 0.5, end: float = 0.9) -> list[float]:
    """A rising validation Dice, one value per epoch."""
    if epochs == 1:
        return [end]
    return [start + (end - start) * e / (epochs - 1) for e in range(epochs)]


def make_run(
    root: Path,
    name: str,
    *,
    preset: str = "demo",
    settings: dict[str, Any] | None = None,
    planned: int = 3,
    volume_dice: list[float | None] | None = None,
    status: str | None = "completed",
    nan_events: int = 0,
    steps_per_epoch: int = 4,
    start_ts: float = 1_700_000_000.0,
    epoch_seconds: float = 60.0,
    checkpoint: bool = True,
    config_file: bool = True,
    truncated: bool = False,
    schema_version: int | None = 1,
    submissions: list[dict[str, Any]] | None = None,
    message: str = "",
) -> Path:
    """Write one run folder under `root` and return its path.

    `volume_dice` gives the per-epoch validation volume Dice (None = non-finite: written as null after a
    `nan` rollback event, as the trainer does); its length is the number of epochs done. `status=None` leaves
    out `run_end` (a run still going, or killed); `message` is run_end's. `truncated` cuts the last line in half.
    `submissions`: dicts with `csv` (file name inside the run folder's parent) and optional `scores`.
    `preset` must be a real preset: the config is resolved from it.
    """
    run_dir = Path(root) / name
    run_dir.mkdir(parents=True)
    cfg = make_config(preset, settings)
    cfg["train"]["epochs"] = planned
    if config_file:
        (run_dir / "config.toml").write_text(tomli_w.dumps(cfg), encoding="utf-8")

    dice = dice_curve(planned) if volume_dice is None else volume_dice
    lines: list[dict[str, Any]] = []
    ts = start_ts
    seq = 0

    def emit(kind: str, epoch: int | None = None, step: int | None = None, **payload: Any) -> None:
        nonlocal seq
        record = {"ts": ts, "seq": seq, "run": name, "kind": kind, "epoch": epoch, "step": step, **payload}
        if schema_version is not None:
            record = {"v": schema_version, **record}
        lines.append(record)
        seq += 1

    emit("run_start", config=cfg, preset=preset, device="cpu", amp="off", versions={}, resumed_from=None)
    # Numbering as the trainer's: step events carry the 0-based epoch in progress, epoch_end /
    # checkpoint / best carry the number of epochs completed (1-based).
    step = 0
    best: dict[str, Any] = {"epoch": None, "volume_dice": None}
    best_index: int | None = None
    for index, vol in enumerate(dice):
        done = index + 1
        for _ in range(steps_per_epoch):
            step += 1
            ts += epoch_seconds / steps_per_epoch
            loss = 1.0 / (1.0 + 0.3 * step)
            emit("step", epoch=index, step=step, loss=loss, lr=1e-4 * (1 - step / 100), samples_per_s=10.0)
        finite = vol is not None and math.isfinite(vol)
        is_best = finite and (best["volume_dice"] is None or vol > best["volume_dice"])
        if not finite:
            emit("nan", epoch=done, step=step, where="validation", action="rollback",
                 counts={"skipped": 0, "rollbacks": 1}, message="non-finite validation")
        if is_best:
            best, best_index = {"epoch": done, "volume_dice": vol}, index
            emit("checkpoint", epoch=done, step=step, path="checkpoints/best.pt", which="best", volume_dice=vol)
        emit("checkpoint", epoch=done, step=step, path="checkpoints/last.pt", which="last", volume_dice=vol)
        emit(
            "epoch_end",
            epoch=done,
            step=step,
            train_loss=0.5 / done,
            val_loss=0.6 / done if finite else None,
            volume_dice=vol if finite else None,
            slice_dice=min(1.0, vol + 0.05) if finite else None,
            global_dice=vol + 0.02 if finite else None,
            seconds=epoch_seconds,
            is_best=is_best,
            epochs=planned,
        )
    for i in range(nan_events):
        emit("nan", epoch=len(dice), step=step, where="loss", action="skip_step",
             counts={"skipped": i + 1, "rollbacks": 0}, message="non-finite loss")
    if status is not None:
        ts += 1.0
        emit("run_end", epoch=len(dice), step=step, status=status, best=best, message=message)

    text = "".join(json.dumps(line) + "\n" for line in lines)
    if truncated:
        text = text[: len(text) - len(json.dumps(lines[-1])) // 2 - 1]
    (run_dir / "events.jsonl").write_text(text, encoding="utf-8")
    os.utime(run_dir / "events.jsonl", (ts, ts))  # as if the last line had been written at `ts`

    if checkpoint and dice:
        ckpt_dir = run_dir / "checkpoints"
        ckpt_dir.mkdir()
        for which, index in (("last", len(dice) - 1), ("best", best_index)):
            if index is None:
                continue
            vol = dice[index]
            sidecar = {
                "format": "liverctl-checkpoint/1",
                "run": name,
                "preset": preset,
                "config": cfg,
                "epoch": index + 1,
                "global_step": step,
                "metrics": {"val_loss": 0.1, "volume_dice": vol, "slice_dice": None if vol is None else vol + 0.05,
                            "global_dice": None if vol is None else vol + 0.02},
                "best": best,
                "versions": {},
            }
            (ckpt_dir / f"{which}.json").write_text(json.dumps(sidecar), encoding="utf-8")

    for sub in submissions or []:
        csv_path = Path(root).parent / sub["csv"] if not Path(sub["csv"]).is_absolute() else Path(sub["csv"])
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        csv_path.write_text("id,rle\ncase_0,1 0\n", encoding="utf-8")
        with open(run_dir / "submissions.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"csv": str(csv_path), "sha256": "0" * 64, "tta": "hflip", "post": "none",
                                 "ts": ts}) + "\n")
        if sub.get("scores") is not None:
            scores_path(csv_path).write_text(json.dumps(sub["scores"]), encoding="utf-8")
    return run_dir


def add_model_checkpoint(run_dir: Path, cfg: dict[str, Any], which: str = "best",
                         cases: dict[str, list[str]] | None = None) -> Path:
    """Save an untrained model of `cfg` as the run's `<which>.pt` (with its sidecar), as train would; `cases`:
    the record of the cases it trained and validated on (None: none, as before liverctl recorded them).

    Enough for anything that only loads and predicts; needs torch.
    """
    import torch

    from liverctl.runs.checkpoint import save_checkpoint
    from liverctl.train.models import build_model

    torch.manual_seed(0)
    model = build_model(cfg, pretrained=False)
    state = {
        "run": Path(run_dir).name,
        "preset": cfg.get("preset"),
        "config": cfg,
        "epoch": 1,
        "global_step": 1,
        "model": model.state_dict(),
        "metrics": {"val_loss": 0.5, "volume_dice": 0.5, "slice_dice": 0.5, "global_dice": 0.5},
        "best": {"epoch": 1, "volume_dice": 0.5},
        "versions": {},
        **({"cases": cases} if cases is not None else {}),
    }
    return save_checkpoint(run_dir, which, state)

"""Hand-written event logs for the `watch` tests and demos (no trainer needed).

As a script it writes a realistic run to look at:

    python tests/watch_fixtures.py /tmp/nanrun --nan          # a v5-focal run that dies of NaN
    python tests/watch_fixtures.py /tmp/okrun                 # a healthy run, finished
    python tests/watch_fixtures.py /tmp/liverun --live 0.5    # written line by line, 0.5 s apart
    liverctl watch /tmp/nanrun
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path


def event_line(kind: str, seq: int, ts: float, *, run: str = "demo", epoch=None, step=None, **fields) -> str:
    """One events.jsonl line as the trainer writes it (NaN passes through as the bare `NaN` token)."""
    record = {"v": 1, "ts": ts, "seq": seq, "run": run, "kind": kind, "epoch": epoch, "step": step, **fields}
    return json.dumps(record, separators=(",", ":")) + "\n"


class EventScript:
    """Builds a list of event lines with increasing `seq` and a clock that moves on as asked."""

    def __init__(self, run: str = "demo", t0: float = 1_700_000_000.0):
        self.run, self.t, self.seq = run, t0, 0
        self.lines: list[str] = []

    def add(self, kind: str, *, after: float = 0.0, epoch=None, step=None, **fields) -> str:
        self.t += after
        line = event_line(kind, self.seq, self.t, run=self.run, epoch=epoch, step=step, **fields)
        self.seq += 1
        self.lines.append(line)
        return line

    def start(self, preset="v3", device="cpu", amp="off", epochs=3, **fields) -> str:
        config = {"train": {"epochs": epochs}, "model": {"arch": "unet", "encoder": "efficientnet-b0"}}
        return self.add("run_start", config=config, preset=preset, device=device, amp=amp,
                        versions={"torch": "2.x"}, resumed_from=None, **fields)

    def epoch(self, epoch: int, *, seconds=60.0, train_loss=0.3, val_loss=0.25, volume_dice=0.9,
              slice_dice=0.95, global_dice=0.92, is_best=False, epochs=3, after=None, **fields) -> str:
        """An epoch_end `after` seconds from the last event (default: the whole epoch's `seconds`)."""
        return self.add("epoch_end", after=seconds if after is None else after, epoch=epoch, train_loss=train_loss, val_loss=val_loss,
                        volume_dice=volume_dice, slice_dice=slice_dice, global_dice=global_dice,
                        seconds=seconds, is_best=is_best, epochs=epochs, **fields)

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(self.lines))
        return path


def realistic_run(name: str, *, nan: bool, t0: float, epochs: int = 15) -> Iterator[str]:
    """A 512x512 v5-style run: step events every 25 steps, ~24 min epochs; with `nan`, fp16 Focal diverges
    in its 6th epoch (skipped steps, a rollback, then the guard aborts)."""
    s = EventScript(name, t0)
    steps_per_epoch, every, epoch_s = 250, 25, 1440.0
    yield s.start(preset="v5-focal" if nan else "v5", device="cuda:0", amp="fp16", epochs=epochs,
                  steps_per_epoch=steps_per_epoch)
    yield s.add("note", message="fold 0: 104 train cases, 26 val cases, 23,412 train slices")
    best = 0.0
    step = 0
    last_epoch = 5 if nan else epochs - 1
    for epoch in range(last_epoch + 1):
        for k in range(0, steps_per_epoch, every):
            step = epoch * steps_per_epoch + k
            loss = 0.55 * math.exp(-step / 900) + 0.08 + 0.01 * math.sin(step)
            if nan and epoch == last_epoch and k >= 100:
                # The guard skips the step: no `step` event, only its `nan` event.
                yield s.add("nan", after=epoch_s * every / steps_per_epoch, epoch=epoch, step=step,
                            where="loss", action="skip_step",
                            counts={"skipped": k // every - 3, "rollbacks": 0 if k < 175 else 1},
                            message="non-finite loss under fp16 autocast; step skipped")
                if k == 175:
                    yield s.add("nan", epoch=epoch, step=step, where="loss", action="rollback",
                                counts={"skipped": 4, "rollbacks": 1},
                                message="4 non-finite steps in a row: rolled back to checkpoints/last.pt (epoch 5)")
                continue
            yield s.add("step", after=epoch_s * every / steps_per_epoch, epoch=epoch, step=step,
                        loss=round(loss, 5), lr=1e-4 * (1 - epoch / epochs), samples_per_s=44.0 + 0.1 * (k % 7),
                        grad_norm=round(1.5 + 0.1 * math.cos(step), 4), gpu_mem_gb=round(9.2 + 0.01 * (k % 5), 2),
                        gpu_mem_peak_gb=11.8)
        if nan and epoch == last_epoch:
            yield s.add("nan", epoch=epoch, step=step, where="loss", action="abort",
                        counts={"skipped": 6, "rollbacks": 2},
                        message="non-finite loss after 2 rollbacks: stopping (try bf16 or a smaller lr)")
            yield s.add("run_end", status="nan_abort", best={"epoch": epoch, "volume_dice": round(best, 4)},
                        message="NaN guard: aborted in epoch 6 after 2 rollbacks")
            return
        volume = 0.96 - 0.25 * math.exp(-(epoch + 1) / 2.5)
        is_best = volume > best
        best = max(best, volume)
        # As the trainer does: step-level events carry the epoch in progress from 0, epoch_end and its
        # checkpoints the number of epochs done.
        # The step events already moved the clock through the epoch: only validation is left.
        yield s.epoch(epoch + 1, seconds=epoch_s + 7 * (epoch % 3), after=7 * (epoch % 3), train_loss=round(loss, 4),
                      val_loss=round(loss * 1.1, 4), volume_dice=round(volume, 4),
                      slice_dice=round(min(0.995, volume + 0.02), 4), global_dice=round(volume + 0.008, 4),
                      is_best=is_best, epochs=epochs)
        yield s.add("checkpoint", epoch=epoch + 1, path=f"runs/{name}/checkpoints/last.pt", which="last",
                    volume_dice=round(volume, 4))
        if is_best:
            yield s.add("checkpoint", epoch=epoch + 1, path=f"runs/{name}/checkpoints/best.pt", which="best",
                        volume_dice=round(volume, 4))
    yield s.add("run_end", status="completed", best={"epoch": epochs, "volume_dice": round(best, 4)},
                message="")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--nan", action="store_true", help="a run that diverges to NaN")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--live", type=float, default=0.0, metavar="SECONDS",
                        help="append one line every SECONDS (with real timestamps) instead of all at once")
    args = parser.parse_args()
    args.run_dir.mkdir(parents=True, exist_ok=True)
    path = args.run_dir / "events.jsonl"
    dry = [json.loads(line) for line in realistic_run(args.run_dir.name, nan=args.nan, t0=0.0, epochs=args.epochs)]
    # Timestamps end 30 s ago (or run on from now, when live), so that the run does not look stalled.
    t0 = time.time() if args.live else time.time() - 30 - dry[-1]["ts"]
    lines = realistic_run(args.run_dir.name, nan=args.nan, t0=t0, epochs=args.epochs)
    with open(path, "w", encoding="utf-8") as fh:
        for line in lines:
            if args.live:
                record = json.loads(line)
                record["ts"] = time.time()
                line = json.dumps(record, separators=(",", ":")) + "\n"
            fh.write(line)
            fh.flush()
            if args.live:
                time.sleep(args.live)
    print(f"wrote {len(dry)} events to {path}")


if __name__ == "__main__":
    main()

"""What writing every chunk file costs ingest: store bytes, files and seconds with all-zero slices written
(what ingest does) against left out (what it did before, and what zarr-python does by default), and the
time `LiverStore.open` takes with its check of the store's files and without.

    python scripts/measure_empty_chunks.py DATA [--liver-labels 1] [--rounds 3]

DATA in any layout ingest reads. Ingest runs in this process (workers=1), the two ways alternating, each
round into a fresh store; the table gives the best of the rounds and the ratio of new to old.

Measured on 2 cores shared with other work (load average 7-9; 2026-12, one ingest process):
- synthetic phantom (`liverctl synth`: 8 + 2 cases of 512 x 512 x 150, 1500 slices, 724 label slices without
  liver), two runs of 4 rounds: ingest best 19.70 / 20.19 s left out, 19.25 / 23.85 s written; the rounds
  spread over 19-31 s either way (one 62 s): no difference above the load's noise. Store 448,091,497 ->
  448,860,385 bytes (+0.17%), 2,019 -> 2,743 files; `LiverStore.open` with its check 7.9-8.3 ms against
  4.9 ms without (best of 7).
- the real CT of ../shared/data/real (3 training cases, 135 slices), 5 rounds: ingest 1.16 s -> 0.89 s
  (noise again); store 9,525,414 -> 9,531,141 bytes (+0.06%), 225 -> 294 files; open 5.9 ms against 4.8 ms.
What the extra files cost, timed alone: an all-zero 512 x 512 uint8 slice encodes to 1,062 bytes (a 4 KiB
block on most file systems), 134 us to encode and write (best of 5 x 200): 0.1 s for the phantom's 724.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def count_files(path: Path) -> int:
    return sum(1 for p in path.rglob("*") if p.is_file())


def open_seconds(store: Path, repeats: int = 7) -> tuple[float, float]:
    """Best seconds of `LiverStore.open` and its slice index with its check (listing every chunk file) and
    without, alternating."""
    from liverctl.data.store import LiverStore

    check = LiverStore.check
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for k, checked in enumerate((True, False)):
            LiverStore.check = check if checked else (lambda self: None)
            started = time.perf_counter()
            LiverStore.open(store).slice_index()
            best[k] = min(best[k], time.perf_counter() - started)
    LiverStore.check = check
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--liver-labels", type=lambda s: [int(v) for v in s.split(",")], default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from liverctl.data import case_writer
    from liverctl.data.ingest import ingest_folder

    every_chunk = case_writer.SliceArrayWriter.write

    def zeros_left_out(self, z: int, values: np.ndarray) -> None:  # the writer before every chunk was written
        if np.ascontiguousarray(values).view(np.uint8).any():
            every_chunk(self, z, values)

    results: dict[str, list[tuple[float, int, int, float, float]]] = {"left out": [], "written": []}
    with tempfile.TemporaryDirectory(dir=args.data.parent) as tmp:
        for r in range(args.rounds):
            for way in ("left out", "written") if r % 2 == 0 else ("written", "left out"):
                case_writer.SliceArrayWriter.write = zeros_left_out if way == "left out" else every_chunk
                store = Path(tmp) / f"{r}-{way.replace(' ', '-')}.zarr"
                summary = ingest_folder(args.data, store=store, liver_labels=args.liver_labels, workers=1)
                assert summary.ok, summary.failures
                opened = open_seconds(store) if way == "written" else (0.0, 0.0)
                results[way].append((summary.seconds, summary.bytes_stored, count_files(store), *opened))
                shutil.rmtree(store)
        case_writer.SliceArrayWriter.write = every_chunk
    print({way: [round(r[0], 2) for r in rows] for way, rows in results.items()})
    print(f"{'':10} {'ingest s':>9} {'bytes':>12} {'files':>7} {'open ms, checked / not':>24}")
    best = {}
    for way, rows in results.items():
        seconds = min(r[0] for r in rows)
        best[way] = (seconds, rows[0][1], rows[0][2])
        checked, unchecked = min(r[3] for r in rows) * 1e3, min(r[4] for r in rows) * 1e3
        opened = f"{checked:14.1f} / {unchecked:7.1f}" if way == "written" else f"{'-':>24}"
        print(f"{way:10} {seconds:9.2f} {rows[0][1]:12d} {rows[0][2]:7d} {opened}")
    old, new = best["left out"], best["written"]
    print(f"{'new / old':10} {new[0] / old[0]:9.3f} {new[1] / old[1]:12.4f} {new[2] / old[2]:7.3f}")


if __name__ == "__main__":
    main()

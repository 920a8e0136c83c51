"""What checking a checkpoint's zip CRC-32s adds to its load: `load_plain` with the check and with it stubbed out,
alternating, median of --repeat, for a read from disk and for a read into memory first (`verify`, as an experiment's
folds are loaded).

    .venv/bin/python scripts/measure_checkpoint_crc.py [CHECKPOINT.pt] [--repeat 7]

Without a checkpoint, one of 200 random float32 tensors, 18 M values (72 MB, the size of a v5 best.pt's weights),
is written to a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from liverctl.runs import checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", type=Path)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.checkpoint
        if path is None:
            generator = torch.Generator().manual_seed(0)
            path = Path(tmp) / "weights.pt"
            torch.save({"model": {f"t{i}": torch.randn(90_000, generator=generator) for i in range(200)}}, path)
        real = checkpoint._crc_matches

        def load(check: bool, verify: bool) -> float:
            checkpoint._crc_matches = real if check else (lambda archive, member: True)
            start = time.perf_counter()
            checkpoint.load_plain(path, verify=(lambda sha256: None) if verify else None)
            return time.perf_counter() - start

        print(f"{path} ({path.stat().st_size / 1e6:.0f} MB), median of {args.repeat}:")
        for verify in (False, True):
            without, with_crc = [], []
            for _ in range(args.repeat):
                without.append(load(False, verify))
                with_crc.append(load(True, verify))
            print(f"  {'into memory first (verify)' if verify else 'from disk'}: without the CRC check "
                  f"{statistics.median(without) * 1000:.0f} ms, with {statistics.median(with_crc) * 1000:.0f} ms")
        checkpoint._crc_matches = real


if __name__ == "__main__":
    main()

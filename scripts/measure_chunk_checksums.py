"""What recording each chunk file's checksum (`schema.CHUNK_CRC32`) costs ingest, what it costs the loader's
reads (nothing is meant to change there: they compare sizes only), and how fast `ingest --verify` reads a store.

    git archive <commit before> liverctl | tar -x -C /tmp/before      # the code to compare against
    python scripts/measure_chunk_checksums.py DATA --baseline /tmp/before [--liver-labels 1] [--rounds 4]

Each measurement runs in a fresh process, the baseline's code (PYTHONPATH=BASELINE) and this checkout's
alternating, round after round: ingest of DATA into a fresh store (in the process, workers=1; wall and CPU
seconds: the CPU time is what other processes on shared cores do not disturb), then random
3-slice windows read from that store with `LiverStore.read_stack` and their label slice (float16 and float32, as
the loader's workers do; CPU time of the process, best of 5 passes of 300 windows, seeded). The table gives the best of the rounds and new / old. Then this
checkout's `verify_case` over every case of its store (MB/s), and per chunk file the encode and checksum times.

Measured 2026-12-07 on the 2-core machine otherwise idle, 4 rounds (figures in docs/store.md):
- the real CT of ../shared/data/real (3 training cases, 135 slices), linked into the competition layout
  (train/volume/volume-<name>.nii.gz, train/segmentation/segmentation-<name>.nii.gz, as tests/conftest.py's
  real_dataset does), --liver-labels 1;
- synthetic phantom, 4 + 1 cases of 512 x 512 x 80 (`liverctl synth --size 512 --slices 80`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child_ingest(data: str, store: str, labels: list[int] | None) -> dict:
    from liverctl.data.ingest import ingest_folder

    started, cpu = time.perf_counter(), time.process_time()
    summary = ingest_folder(data, store=store, liver_labels=labels, workers=1)
    assert summary.ok, summary.failures
    return {"ingest_s": time.perf_counter() - started, "ingest_cpu_s": time.process_time() - cpu}


def child_read(store: str) -> dict:
    import numpy as np

    from liverctl.data.store import LiverStore

    s = LiverStore.open(store)
    index = s.slice_index()
    rng = np.random.default_rng(0)
    rows = rng.integers(0, len(index.z), size=300)
    windows = [(index.case_ids[int(index.case[r])], int(index.z[r])) for r in rows]
    out = {}
    for dtype in (np.float16, np.float32):
        best = float("inf")
        for _ in range(5):
            started = time.process_time()  # CPU time: other processes on the shared cores do not count
            for case, z in windows:
                s.read_stack(case, z, context=1, dtype=dtype)
                s.read_label_slice(case, z) if s.meta(case)["split"] == "train" else None
            best = min(best, time.process_time() - started)
        out[f"read_{np.dtype(dtype).name}_ms"] = best / len(windows) * 1e3
    return out


def child_verify(store: str) -> dict:
    import numpy as np

    from liverctl.data.case_writer import SliceArrayWriter  # noqa: F401 - the encoder's imports, loaded
    from liverctl.data.schema import CASES_GROUP, chunk_checksum, read_attrs, slice_chunk_path, slice_encoder
    from liverctl.data.store_check import verify_case

    root = Path(store) / CASES_GROUP
    started = time.perf_counter()
    read = 0
    for case_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        result = verify_case(case_dir, read_attrs(case_dir))
        assert result.damage is None and result.checked, result
        read += result.bytes_read
    seconds = time.perf_counter() - started
    # per chunk file: encode (what ingest does anyway) against the checksum, on the store's own image slices
    from liverctl.data.store import LiverStore

    s = LiverStore.open(store)
    case = s.case_ids()[0]
    encode = slice_encoder()
    slices = [s.read_slice(case, z) for z in range(min(20, s.meta(case)["shape"][2]))]
    chunks = [slice_chunk_path(root / case / "image", z).read_bytes() for z in range(len(slices))]
    enc = min(_timed(lambda: [encode(np.ascontiguousarray(v)) for v in slices]) for _ in range(5)) / len(slices)
    crc = min(_timed(lambda: [chunk_checksum(c) for c in chunks]) for _ in range(5)) / len(chunks)
    return {"verify_s": seconds, "verify_mb": read / 1e6, "encode_ms": enc * 1e3, "crc_ms": crc * 1e3,
            "chunk_kb": sum(map(len, chunks)) / len(chunks) / 1e3}


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def run_child(code_root: Path, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    out = subprocess.run([sys.executable, __file__, "--child", *args], env=env, check=True, capture_output=True,
                         text=True, cwd=code_root)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?")
    parser.add_argument("--baseline", type=Path)
    parser.add_argument("--liver-labels", default=None)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "ingest":
            labels = None if rest[2] == "-" else [int(v) for v in rest[2].split(",")]
            result = child_ingest(rest[0], rest[1], labels)
        elif kind == "read":
            result = child_read(rest[0])
        else:
            result = child_verify(rest[0])
        print(json.dumps(result))
        return
    best: dict[str, dict[str, float]] = {"old": {}, "new": {}}
    with tempfile.TemporaryDirectory(prefix="checksums-") as tmp:
        for k in range(args.rounds):
            for which, code in (("old", args.baseline), ("new", ROOT)) if k % 2 == 0 else (("new", ROOT), ("old", args.baseline)):
                store = Path(tmp) / f"{which}-{k}.zarr"
                figures = run_child(code, "ingest", str(Path(args.data).absolute()), str(store), args.liver_labels or "-")
                figures.update(run_child(code, "read", str(store)))
                for key, value in figures.items():
                    best[which][key] = min(best[which].get(key, float("inf")), value)
                print(which, k, {key: round(v, 4) for key, v in figures.items()}, flush=True)
                if k < args.rounds - 1:
                    import shutil

                    shutil.rmtree(store)
        print(f"{'':16} {'old':>10} {'new':>10} {'new/old':>8}")
        for key in best["old"]:
            old, new = best["old"][key], best["new"][key]
            print(f"{key:16} {old:10.4f} {new:10.4f} {new / old:8.3f}")
        verify = run_child(ROOT, "verify", str(Path(tmp) / f"new-{args.rounds - 1}.zarr"))
        print({key: round(v, 4) for key, v in verify.items()},
              f"verify {verify['verify_mb'] / verify['verify_s']:.0f} MB/s")


if __name__ == "__main__":
    main()

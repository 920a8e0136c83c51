"""Time reading (`liverctl evaluate`'s parse) and writing (`submit`'s writer with its self-check) of a
large submission CSV, the RLE fast path against the token-by-token reference path, in turns in one
process (BENCHMARKS.md, "Submission CSV parsing").

    .venv/bin/python scripts/bench_submission_csv.py realistic /tmp/csvbench   # 70 cases, ~31k slices, ~16 MB
    .venv/bin/python scripts/bench_submission_csv.py noise /tmp/csvbench       # 336 noise slices, ~190 MB

"before" patches out `rle._fast_pairs` (every string goes through the reference path, as before the fast
path) and makes the writer's read-back parse every string again (as before it skipped the strings it had
already checked). The CSV and its shapes are written once into DIR and reused.

With `--compare encode` (BENCHMARKS.md, "Submission CSV writing") it times instead, case by case, the
encoder as it was before `rle.join_numbers` and the tiled copy (`_encode_volume_before`: one strided
transposed copy, then `" ".join(map(str, ...))` per slice) against `rle.encode_volume`, alone and inside
the writer's `add_case` (encoding and its decode self-check), the two in turns (order swapped every repeat).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from liverctl.infer import rle, submission


def realistic_cases(n_cases: int = 70, size: int = 512, seed: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    """(case id, (X, Y, Z) mask): 300-560 slices, a lobed liver-like blob in the middle third, a few specks."""
    rng = np.random.default_rng(seed)
    xs, ys = np.arange(size)[:, None], np.arange(size)[None, :]
    for c in range(n_cases):
        depth = int(rng.integers(300, 560))
        mask = np.zeros((size, size, depth), dtype=bool)
        z0, z1 = depth // 3, 2 * depth // 3
        cx, cy = rng.integers(size // 3, size // 2, size=2)
        ax, ay = rng.integers(size // 8, size // 4, size=2)
        angle = np.arctan2(ys - cy, xs - cx)
        sin5, cos5, lobes = np.sin(5 * angle), np.cos(5 * angle), 1 + 0.04 * np.sin(13 * angle)
        for k in range(z0, z1):
            s = np.sin(np.pi * (0.1 + 0.8 * (k - z0) / max(1, z1 - z0)))
            wobble = lobes + 0.08 * (sin5 * np.cos(0.1 * k) + cos5 * np.sin(0.1 * k))
            mask[..., k] = ((xs - cx) / (ax * s)) ** 2 + ((ys - cy) / (ay * s)) ** 2 <= wobble
            for _ in range(int(rng.integers(0, 4))):
                px, py = rng.integers(0, size - 4, size=2)
                mask[px:px + 3, py:py + 3, k] = True
        yield f"case{c:03d}", mask


def noise_cases(n_cases: int = 7, size: int = 512, depth: int = 48, seed: int = 1) -> Iterator[tuple[str, np.ndarray]]:
    """The worst case: every slice half foreground at random (~0.55 MB of RLE per 512 x 512 slice)."""
    rng = np.random.default_rng(seed)
    for c in range(n_cases):
        yield f"noise{c}", rng.random((size, size, depth)) < 0.5


def make_csv(kind: str, folder: Path) -> tuple[Path, dict[str, tuple[int, int, int]]]:
    path, shapes_path = folder / f"{kind}.csv", folder / f"{kind}.json"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        shapes = {}
        with open(path, "w", newline="") as fh:
            out = csv.writer(fh, lineterminator="\n")
            out.writerow(submission.DEFAULT_HEADER)
            for case_id, mask in (realistic_cases() if kind == "realistic" else noise_cases()):
                shapes[case_id] = mask.shape
                out.writerows((submission.slice_id(case_id, z), t) for z, t in enumerate(rle.encode_volume(mask)))
        shapes_path.write_text(json.dumps(shapes))
    return path, {c: tuple(s) for c, s in json.loads(shapes_path.read_text()).items()}


def _full_reparse_self_check(self, written: Path, header: tuple[str, str]) -> str:
    """The writer's read-back as it was: every string parsed again, then compared (the file read twice: the
    reader that kept every row for the comparison is gone)."""
    parsed = submission.read_submission(written, self._shapes, header=header)
    for _, row in list(submission.CsvReader(written, "submission"))[1:]:
        if self._rows.get(row[0]) != row[1]:
            raise RuntimeError(f"row {row[0]} reads back differently")
    return parsed.sha256


def _encode_volume_before(volume: np.ndarray, empty: str = rle.EMPTY_RLE) -> list[str]:
    """`rle.encode_volume` as it was on 2026-12-06: the baseline of `--compare encode`."""
    volume = np.asarray(volume)
    x, y, z = volume.shape
    n = x * y
    padded = np.zeros((z, n + 2), dtype=bool)
    padded[:, 1:-1].reshape(z, y, x)[...] = volume.transpose(2, 1, 0)
    change = np.flatnonzero(padded[:, 1:] != padded[:, :-1])
    rows, pos = np.divmod(change, n + 1)
    starts, ends = pos[0::2], pos[1::2]
    runs = np.stack([starts + 1, ends - starts], axis=1).astype(np.int64)
    counts = np.bincount(rows[0::2], minlength=z)
    return [" ".join(map(str, r.ravel().tolist())) if len(r) else empty
            for r in np.split(runs, np.cumsum(counts)[:-1])]


def compare_encoders(path: Path, shapes: dict[str, tuple[int, int, int]], cases: list[str], repeats: int,
                     folder: Path) -> None:
    encoders = {"before": _encode_volume_before, "after": rle.encode_volume}
    parsed = submission.read_submission(path, shapes)
    times = {f"{what} {side}": [0.0] * repeats for what in ("encode", "add_case") for side in encoders}
    ratios: list[float] = []
    for r in range(repeats):
        for case_id in cases:
            mask = parsed.volume(case_id)
            took = {}
            for side in (list(encoders) if r % 2 == 0 else list(reversed(encoders))):
                encoder = encoders[side]
                t = time.perf_counter()
                texts = encoder(mask)
                took[side] = time.perf_counter() - t
                times[f"encode {side}"][r] += took[side]
                rle.encode_volume = encoder
                try:
                    t = time.perf_counter()
                    submission.SubmissionWriter(folder / "unused.csv").add_case(case_id, mask)
                    times[f"add_case {side}"][r] += time.perf_counter() - t
                finally:
                    rle.encode_volume = encoders["after"]
                took[f"{side} texts"] = texts
            if took["before texts"] != took["after texts"]:
                raise SystemExit(f"{case_id}: the two encoders disagree")
            ratios.append(took["before"] / took["after"])
    slices = sum(shapes[c][2] for c in cases)
    print(f"{len(cases)} case(s), {slices} slices; totals per repeat, median of {repeats}, in turns case by case")
    for key, values in times.items():
        print(f"  {key:16s} {np.median(values):7.2f} s   {' '.join(f'{v:.2f}' for v in values)}")
    print(f"  encode before/after per case: median {np.median(ratios):.2f}x, "
          f"range {min(ratios):.2f}-{max(ratios):.2f}x ({len(ratios)} pairs)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=["realistic", "noise"])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--write-cases", type=int, default=10, help="cases written per repeat (encoding is slow)")
    ap.add_argument("--compare", choices=["parse", "encode"], default="parse")
    args = ap.parse_args()
    path, shapes = make_csv(args.kind, args.folder)
    if args.compare == "encode":
        compare_encoders(path, shapes, list(shapes)[:args.write_cases], args.repeats, args.folder)
        return
    fast, self_check = rle._fast_pairs, submission.SubmissionWriter._self_check
    sides = {"before": (lambda text, n_pixels: None, _full_reparse_self_check), "after": (fast, self_check)}
    times: dict[str, list[float]] = {f"{what} {side}": [] for what in ("read", "add_case", "close") for side in sides}
    print(f"{path}: {path.stat().st_size / 1e6:.0f} MB, {sum(s[2] for s in shapes.values())} slices")
    parsed = None
    cases = list(shapes)[:args.write_cases]
    for _ in range(args.repeats):
        for side, (fast_pairs, check) in sides.items():
            rle._fast_pairs, submission.SubmissionWriter._self_check = fast_pairs, check
            t = time.perf_counter()
            result = submission.read_submission(path, shapes)
            times[f"read {side}"].append(time.perf_counter() - t)
            parsed = parsed or result
            del result
            writer, add = submission.SubmissionWriter(args.folder / f"out_{args.kind}.csv"), 0.0
            for case_id in cases:
                mask = parsed.volume(case_id)
                t = time.perf_counter()
                writer.add_case(case_id, mask)
                add += time.perf_counter() - t
            t = time.perf_counter()
            writer.close()
            times[f"close {side}"].append(time.perf_counter() - t)
            times[f"add_case {side}"].append(add)
    rle._fast_pairs, submission.SubmissionWriter._self_check = fast, self_check
    print(f"writer: {len(cases)} case(s), {sum(shapes[c][2] for c in cases)} slices; median of {args.repeats}, in turns")
    for key, values in times.items():
        print(f"  {key:16s} {np.median(values):7.2f} s   {' '.join(f'{v:.2f}' for v in values)}")


if __name__ == "__main__":
    main()

"""Out-of-fold predictions: each fold's best checkpoint predicts its held-out cases once more, and the
probabilities are kept compactly in `runs/<name>/oof.zarr` for the decisions (`decide.py`).

Each case is one uint8 array (X, Y, Z): round(probability * 255), so a threshold t is applied as
`q >= ceil(255 t)` (`threshold_mask`). An array counts only once its `complete` attribute is set, which
is written after its voxels; predicting a fold again replaces its cases. As in the store (`schema.EVERY_CHUNK`),
every chunk file is written, all-zero ones included, and the array says so: zarr reads a missing chunk file as
0, so a chunk lost in a copy would be probability 0 to the decision. A marked array with a chunk file missing
is refused on read and counts as a missing case, which `liverctl train --resume` predicts again; arrays from
before the mark read as they did. A chunk file there but undecodable (cut short) is refused on read in one line
naming it; zstd keeps no size to check it against, so only decoding finds it and the line says to delete the
case's array, which `--resume` then predicts again. Each chunk is a zstd frame with its content checksum
(`OOF_ZSTD`): a bit flipped in the compressed data, which without it decoded to other probabilities without a
word (200 of 201 single-bit flips of a chunk, tried), fails to decode and is named the same way; it costs ~4 bytes a
chunk and ~15 ms per 512 x 512 x 100 case on writing and on reading each (2 shared cores), beside seconds of
predicting it. Arrays written before it read as they did. Only cases in a fold (>= 0)
have out-of-fold predictions: train-only cases of extra sources (fold -2) are never held out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from liverctl.data.schema import EVERY_CHUNK
from liverctl.errors import LiverctlError
from liverctl.experiment.folder import OOF_STORE
from liverctl.printable import quoted

QUANT = 255
OOF_ZSTD = {"level": 0, "checksum": True}  # zarr-python's default for uint8 (zstd, level 0), with the checksum on


def quantize(probs: np.ndarray) -> np.ndarray:
    """Shape: float (X, Y, Z) in [0, 1] -> uint8 (X, Y, Z). One temporary of the probabilities' size, scaled and
    rounded in place (a 512 x 512 x 900 case's float32 probabilities are 0.94 GB)."""
    scaled = np.clip(probs, 0.0, 1.0)
    scaled *= QUANT
    return np.rint(scaled, out=scaled).astype(np.uint8)


def threshold_mask(q: np.ndarray, threshold: float) -> np.ndarray:
    """`probability >= threshold` on quantised probabilities. Shape: uint8 (X, Y, Z) -> bool (X, Y, Z)."""
    return q >= math.ceil(threshold * QUANT - 1e-9)


def _group(exp_dir: str | Path, mode: str):
    import zarr

    path = Path(exp_dir) / OOF_STORE
    if mode == "r" and not (path / "zarr.json").is_file():
        raise LiverctlError("the experiment has no out-of-fold predictions yet (no finished fold)", path=path)
    return zarr.open_group(str(path), mode=mode)


def write_oof_case(exp_dir: str | Path, case_id: str, probs: np.ndarray, fold: int) -> None:
    """Store one case's out-of-fold probabilities (X, Y, Z) float; `complete` is set last."""
    q = quantize(probs)
    group = _group(exp_dir, "a")
    depth = q.shape[2]
    from zarr.codecs import ZstdCodec

    array = group.create_array(
        case_id, shape=q.shape, dtype="uint8", chunks=(q.shape[0], q.shape[1], min(depth, 16)), overwrite=True,
        config={"write_empty_chunks": True}, compressors=ZstdCodec(**OOF_ZSTD),
    )
    array[...] = q
    array.attrs.update({"fold": int(fold), EVERY_CHUNK: True, "complete": True})


def oof_cases(exp_dir: str | Path) -> dict[str, int]:
    """Case -> fold of every complete out-of-fold array."""
    group = _group(exp_dir, "r")
    out = {}
    for name, array in group.arrays():
        attrs = dict(array.attrs)
        if attrs.get("complete"):
            out[name] = int(attrs["fold"])
    return dict(sorted(out.items()))


def missing_cases(exp_dir: str | Path, expected: dict[str, int]) -> list[str]:
    """The cases of `expected` (case -> fold) without a complete out-of-fold array predicted by that fold."""
    if not (Path(exp_dir) / OOF_STORE / "zarr.json").is_file():
        return sorted(expected)
    done = oof_cases(exp_dir)
    group = _group(exp_dir, "r")
    return [
        case for case, fold in sorted(expected.items())
        if done.get(case) != fold or _chunk_damage(exp_dir, case, group[case]) is not None
    ]


def _chunk_damage(exp_dir: str | Path, case_id: str, array) -> LiverctlError | None:
    """The error naming the case's first missing or empty chunk file, where its array says every chunk was
    written (`liverctl.data.store_check.every_chunk_damage`); else None."""
    from liverctl.data.store_check import every_chunk_damage

    if dict(array.attrs).get(EVERY_CHUNK) is not True or (damage := every_chunk_damage(array)) is None:
        return None
    return LiverctlError(
        f"out-of-fold prediction of case {quoted(case_id)}: {damage.problem}; oof.zarr is damaged, e.g. copied "
        f"incompletely: run `liverctl train --resume {Path(exp_dir)}` to predict that case again",
        path=damage.path,
    )


def _read_checked(exp_dir: str | Path, group, case_id: str) -> np.ndarray:
    array = group[case_id]
    if (error := _chunk_damage(exp_dir, case_id, array)) is not None:
        raise error
    try:
        return np.asarray(array[...])
    except Exception:
        from liverctl.data.store_check import undecodable_chunk

        if (found := undecodable_chunk(array)) is None:  # no chunk fails on its own: not a damaged chunk file
            raise
        # zstd keeps no size to check a file against: only decoding finds it (a flipped bit too, by the frame's
        # checksum, `OOF_ZSTD`), so `missing_cases` does not
        raise LiverctlError(
            f"out-of-fold prediction of case {quoted(case_id)}: chunk file cannot be decoded ({found[1]}); oof.zarr is "
            f"damaged: delete {Path(exp_dir) / OOF_STORE / case_id} and run `liverctl train --resume "
            f"{Path(exp_dir)}` to predict that case again",
            path=found[0],
        ) from None


def read_oof_case(exp_dir: str | Path, case_id: str) -> np.ndarray:
    """Shape: -> uint8 (X, Y, Z). A missing, empty or undecodable chunk file: LiverctlError naming it."""
    return _read_checked(exp_dir, _group(exp_dir, "r"), case_id)


def iter_oof(exp_dir: str | Path, store, cases: dict[str, int] | None = None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(case id, quantised probabilities uint8 (X, Y, Z), label bool (X, Y, Z)) for each OOF case."""
    group = _group(exp_dir, "r")
    for case_id in cases if cases is not None else oof_cases(exp_dir):
        q = _read_checked(exp_dir, group, case_id)
        label = store.read_label_volume(case_id) > 0
        if q.shape != label.shape:
            raise LiverctlError(
                f"out-of-fold prediction of {quoted(case_id)} is {q.shape}, its label {label.shape}; "
                "the store changed since the experiment ran",
                path=Path(exp_dir) / OOF_STORE,
            )
        yield case_id, q, label


def predict_fold(
    exp_dir: str | Path,
    fold_run: str | Path,
    fold: int,
    store,
    *,
    device: str = "auto",
    on_case: Callable[[str], None] | None = None,
    on_stage: Callable[[str, int], None] | None = None,
    on_slices: Callable[[int], None] | None = None,
    summary: dict | None = None,
) -> list[str]:
    """The fold's best checkpoint predicts every case of its fold (infer.tta, infer.batch_size of its
    config) into the experiment's OOF store. Returns the case ids written. `summary` (experiment.json): the
    checkpoint is checked against it as it is loaded (`liverctl.experiment.ensemble.load_checked_runs`: the bytes
    against the sha256 recorded when the fold finished, its own config against the experiment's). `on_stage(name,
    total)` announces the slices to predict, `on_slices(n)` after each batch of them (submit's progress callbacks)."""
    from liverctl.device import resolve_device
    from liverctl.experiment.ensemble import load_checked_runs
    from liverctl.infer.predict import predict_cases

    device = str(resolve_device(device))
    owner = {} if summary is None else {Path(fold_run): (Path(exp_dir), summary, fold)}
    runs = load_checked_runs([Path(fold_run)], "best", device, owner)
    cfg = runs[0].cfg
    cases = [case for case, f in sorted(store.folds().items()) if f == fold]
    if not cases:
        raise LiverctlError(f"fold {fold} has no cases in the store", path=store.path)
    if on_stage is not None:
        on_stage(f"fold {fold} out-of-fold", sum(int(store.meta(case)["shape"][2]) for case in cases))
    written = []
    for case_id, probs in predict_cases(
        runs, store, cases,
        tta=str(cfg["infer"]["tta"]), batch_size=max(1, int(cfg["infer"]["batch_size"])),
        device=device, amp=str(cfg["train"]["amp"]), on_slices=on_slices,
    ):
        write_oof_case(exp_dir, case_id, probs, fold)
        written.append(case_id)
        if on_case is not None:
            on_case(case_id)
    return written

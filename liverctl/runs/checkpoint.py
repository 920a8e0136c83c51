"""Self-describing checkpoints: written atomically, loaded with weights_only and checked.

`runs/<name>/checkpoints/<which>.pt` is a `torch.save` dict (see ARCHITECTURE.md, Runs) and
`<which>.json` beside it holds the same minus tensors, so that `liverctl runs` needs no torch.
Writes go to a temporary file in the same folder, are fsynced, then renamed over the old file:
a crash leaves either the previous checkpoint or the new one, never half of one.

Checkpoints are shared between strangers, so they hold plain data only (tensors, numbers, strings,
lists, dicts: RNG states as lists, the config as TOML-like data) and are read only with
`torch.load(weights_only=True)`, which never unpickles anything else and so never runs code from the
file. A file that needs more is refused. Checkpoints of the previous format (numpy RNG state) need
that, and are converted, once and only on request, by `convert_checkpoint(..., trust_code=True)`
(`liverctl convert-checkpoint OLD NEW --trust-code`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from liverctl.errors import LiverctlError
from liverctl.printable import quoted
from liverctl.runs.events import json_value
from liverctl.runs.folder import checkpoint_path
from liverctl.runs.validation_cases import CASES_KEY, check_recorded_split

FORMAT = "liverctl-checkpoint/1"
TENSOR_KEYS = ("model", "optimizer", "scheduler", "scaler", "rng")
CONVERT_COMMAND = "liverctl convert-checkpoint"
# Where a loaded checkpoint keeps its config as the file recorded it (its "config" has today's new keys filled in):
# what is compared with another record of the same run (experiment.json's config, `check_fold_config`).
RECORDED_CONFIG = "recorded_config"
# What every checkpoint must hold, and what a resume needs besides (entry -> (types, in words)).
_NEEDED = {
    "config": (dict, "a table"),
    "model": (dict, "a table of tensors"),
    "epoch": (int, "a whole number"),
    "global_step": (int, "a whole number"),
}
_NEEDED_TO_RESUME = {
    "optimizer": (dict, "a table"),
    "scheduler": (dict, "a table"),
    "scaler": (dict, "a table"),
    "rng": ((dict, type(None)), "a table"),
    "step_in_epoch": (int, "a whole number"),
}
METRIC_KEYS = ("train_loss", "val_loss", "volume_dice", "slice_dice", "global_dice")
_OPTIONAL = {
    "best": (dict, "a table"),
    "metrics": (dict, "a table"),
    "guard": (dict, "a table"),
    "epoch_losses": (dict, "a table"),
}


def _atomic_write(path: Path, write) -> None:
    """`write(binary file)` into `path` through the one atomic write (`liverctl.files.atomic_open`): a full
    disk is one line and leaves no temporary file."""
    from liverctl.files import atomic_open

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb", what=f"the checkpoint {path.name}") as fh:
        write(fh)


# Per-parameter state tensors of each optimiser liverctl builds (torch creates them at the first step).
_OPTIMIZER_SLOTS = {"AdamW": 2, "Adam": 2, "SGD": 1}
def checkpoint_bytes(model, optimizer) -> int:
    """About the size of one checkpoint of `model` trained by `optimizer`: the model's tensors and the
    optimiser's per-parameter state (two moments for Adam and AdamW, momentum for SGD). The rest (config,
    RNG, scheduler) is kilobytes."""
    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    param_bytes = sum(p.numel() * p.element_size() for group in optimizer.param_groups for p in group["params"])
    return model_bytes + _OPTIMIZER_SLOTS.get(type(optimizer).__name__, 2) * param_bytes


def require_room_for_checkpoints(where: str | os.PathLike, each: int, *, runs: int = 1, held: int = 0) -> None:
    """Refuse up front, in one line, training whose checkpoints would not fit on the disk of `where` (rather
    than a full disk an epoch later): best and last of each of `runs` runs of `each` bytes, and the one
    being written, less `held` bytes that those runs' checkpoints already take (a resume replaces them)."""
    from liverctl.disk import human_bytes, require_free

    if runs == 1:
        needs = f"this run's checkpoints (best, last and the one being written, {human_bytes(each)} each)"
    else:
        needs = (f"the checkpoints of {runs} runs (best and last of each, and the one being written, "
                 f"{human_bytes(each)} each)")
    require_free(
        where, (2 * runs + 1) * each - held, needs,
        "free some space or give --runs-dir a folder on a larger disk",
    )


def checkpoints_held(run_dir: str | os.PathLike) -> int:
    """Bytes that `run_dir`'s best and last checkpoints take now."""
    paths = (checkpoint_path(run_dir, "best"), checkpoint_path(run_dir, "last"))
    return sum(p.stat().st_size for p in paths if p.is_file())


def save_checkpoint(run_dir: str | os.PathLike, which: str, state: dict) -> Path:
    """Write `<which>.pt` and its `<which>.json` sidecar atomically; returns the .pt path.

    `state` holds format/run/preset/config/epoch/global_step/metrics/best/versions and the tensor
    parts model/optimizer/scheduler/scaler/rng.
    """
    import torch

    path = checkpoint_path(run_dir, which)
    state = {"format": FORMAT, **state}
    state.update({k: _plain_numbers(v) for k, v in state.items() if k not in TENSOR_KEYS})
    # torch.save records each tensor's device, and a plain torch.load on a machine without it (a CPU-only
    # notebook loading a GPU run's best.pt) fails with "Attempting to deserialize object on a CUDA device"
    state.update({k: on_cpu(state[k]) for k in TENSOR_KEYS if k in state})
    _check_plain(state, "checkpoint")
    _atomic_write(path, lambda fh: torch.save(state, fh))
    sidecar = {k: v for k, v in state.items() if k not in TENSOR_KEYS}
    text = json.dumps(json_value(sidecar), indent=1, allow_nan=False)
    _atomic_write(path.with_suffix(".json"), lambda fh: fh.write(text.encode("utf-8")))
    return path


def on_cpu(value: Any, *, copy: bool = False) -> Any:
    """`value` (a state dict: tensors in dicts, lists and tuples) with every tensor detached and on the CPU;
    a CPU tensor is kept as it is unless `copy` (then everything else is deep-copied too)."""
    import copy as copying

    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=copy)
    if isinstance(value, dict):
        return {k: on_cpu(v, copy=copy) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_cpu(v, copy=copy) for v in value)
    return copying.deepcopy(value) if copy else value


def load_checkpoint(
    path: str | os.PathLike, map_location: str = "cpu", *, resume: bool = False,
    verify: Callable[[str], None] | None = None,
) -> dict:
    """The dict written by `save_checkpoint`, read without running code from the file.

    LiverctlError (one line naming the file) if it is missing, unreadable, needs anything but plain data
    unpickled (it may contain code), is foreign, or lacks an entry (also those a resume needs, with
    `resume=True`). The config is checked against the current defaults (new keys filled in); the config as the
    file recorded it is kept under RECORDED_CONFIG. `verify`: see `load_plain`.
    """
    path = Path(path)
    if not path.is_file():
        raise LiverctlError("checkpoint not found", path=path)
    return _checked(load_plain(path, map_location, verify=verify), path, resume=resume)


def load_plain(
    path: str | os.PathLike, map_location: str = "cpu", what: str = "checkpoint", *,
    verify: Callable[[str], None] | None = None,
) -> Any:
    """`torch.load(path, weights_only=True)`: tensors and plain data only, so nothing in the file runs.

    Any failure is one LiverctlError naming the file; one that wants other objects says it may contain code.
    `verify(sha256)`, when given, is called with the hex sha256 of exactly the bytes that are then parsed, before
    they are parsed (it raises to refuse them): the file is read once into memory, hashed and loaded from there,
    so a file replaced after the check cannot be what is loaded. That holds the file's bytes and its tensors at
    once (twice a checkpoint's size in memory for a moment: 2 x 137 MB for the largest preset's best.pt); without
    `verify` the file is loaded from disk as it is read.
    """
    import torch

    path = Path(path)
    try:
        source: Any = path
        if verify is not None:
            data = path.read_bytes()
            verify(hashlib.sha256(data).hexdigest())
            source = io.BytesIO(data)
        _check_zip_members(source, path, what)
        with warnings.catch_warnings():  # e.g. torch's note on the pickle protocol: not for the user
            warnings.simplefilter("ignore")
            return torch.load(source, map_location=map_location, weights_only=True)
    except LiverctlError:
        raise
    except pickle.UnpicklingError as exc:
        raise _refusal(path, exc, what) from None
    except Exception as exc:
        detail = str(exc).strip().splitlines()
        raise LiverctlError(
            f"cannot read {what} ({type(exc).__name__}{': ' + detail[0][:200] if detail else ''})", path=path
        ) from None


def _check_zip_members(source: Any, path: Path, what: str) -> None:
    """Refuse a zip (torch.save's format) whose parts are not as torch.save wrote them, before torch reads it:
    - a part that is compressed: torch's reader inflates a compressed member whole before it compares its size
      with the tensor it is for (a 1 MB file of deflated zeros took 1 GB of memory before its refusal; a larger
      one can take all of it). torch.save stores every member uncompressed, so a stored member's size is bounded
      by the file's (a stored one claiming more than it holds is refused by torch's reader before any allocation);
    - a part whose bytes do not match the CRC-32 torch.save recorded for it: torch's reader never checks them,
      so a bit flipped in a tensor (a bad copy, a bad disk) loaded as other weights without a word. Parts with no
      CRC recorded (0: `torch.serialization.set_crc32_options(False)`) are not checked.
    Files that are not zips are torch's to read or refuse (its older format checks every size it reads against
    the file)."""
    import zipfile

    try:
        if not zipfile.is_zipfile(source):
            return
        with zipfile.ZipFile(source) as archive:
            members = archive.infolist()
            for member in members:
                if member.compress_type != zipfile.ZIP_STORED:
                    raise LiverctlError(
                        f"cannot read {what}: its part {quoted(member.filename)} is compressed (torch.save stores "
                        f"every part as it is), so it could unpack to any size ({member.file_size} bytes claimed); "
                        "it is not loaded",
                        path=path,
                    )
            for member in members:
                if member.CRC and not _crc_matches(archive, member):
                    raise LiverctlError(
                        f"cannot read {what}: its part {quoted(member.filename)} does not match the CRC-32 torch.save "
                        "recorded for it: the file is damaged (a bad copy or disk; a flipped bit in a tensor would "
                        "load as other weights); copy it again from where it came from",
                        path=path,
                    )
    except LiverctlError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        return  # torch's reader says what is wrong with it
    finally:
        if hasattr(source, "seek"):
            source.seek(0)


def _crc_matches(archive: Any, member: Any) -> bool:
    """Whether `member`'s stored bytes have the CRC-32 its entry records: its local header read for where they
    start (as zipfile does), then zlib's CRC-32 over them 1 MiB at a time into one buffer (about 3 GB/s; zipfile's
    own reading copies each block twice and took 2-3 times as long)."""
    import struct
    import zlib

    source = archive.fp
    source.seek(member.header_offset)
    header = source.read(30)
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        return False
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    source.seek(member.header_offset + 30 + name_length + extra_length)
    left, crc = member.compress_size, 0
    block = bytearray(min(left, 1 << 20))
    view = memoryview(block)
    while left:
        got = source.readinto(view[: min(left, len(block))])
        if not got:
            return False
        crc = zlib.crc32(view[:got], crc)
        left -= got
    return crc == member.CRC


def _refusal(path: Path, exc: Exception, what: str) -> LiverctlError:
    """The one line for a file that `weights_only` would not load: it wants more than plain data."""
    wanted = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if wanted is None:  # not even a pickle of plain data: damaged, or a hand-made pickle
        return LiverctlError(
            f"cannot read {what}: it is not plain tensors and data (damaged, or not made by torch.save) "
            "and may contain code, so it is not unpickled any other way",
            path=path,
        )
    hint = (
        f" A checkpoint of liverctl before plain-data checkpoints also looks like this; only if you trust where "
        f"it came from, convert it with `{CONVERT_COMMAND} {path} NEW.pt --trust-code`"
        if what == "checkpoint"
        else ""
    )
    return LiverctlError(
        f"refused: it asks to unpickle {wanted.group(1)}, not just tensors and plain data, so it may contain "
        f"code.{hint}",
        path=path,
    )


def _checked(state: Any, path: Path, *, resume: bool) -> dict:
    """`state` if it has the layout of a liverctl checkpoint (and a usable config), else LiverctlError."""
    import torch

    from liverctl.config import check_config

    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise LiverctlError(f"not a liverctl checkpoint (expected format {FORMAT})", path=path)
    needed = {**_NEEDED, **(_NEEDED_TO_RESUME if resume else {})}
    for key, (types, words) in {**needed, **_OPTIONAL}.items():
        if key not in state:
            if key in needed:
                raise LiverctlError(f"checkpoint has no '{key}' entry; it is damaged or was not written by liverctl train", path=path)
            continue
        value = state[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise LiverctlError(f"checkpoint entry '{key}' should be {words}, not {type(value).__name__}", path=path)
    bad = next((k for k, v in state["model"].items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise LiverctlError(f"checkpoint entry 'model' should be a table of tensors (entry {quoted(bad)} is not)", path=path)
    if not state["model"]:
        raise LiverctlError("checkpoint entry 'model' is empty: no weights", path=path)
    problem = _odd_carried_entries(state)
    if problem is not None:  # a resume compared, counted and saved them again mid-run (TypeError, KeyError)
        raise LiverctlError(f"checkpoint entry {problem}; it is damaged or was not written by liverctl train", path=path)
    if CASES_KEY in state and (problem := check_recorded_split(state[CASES_KEY])) is not None:
        raise LiverctlError(f"checkpoint entry '{CASES_KEY}' {problem}", path=path)
    recorded = state["config"]
    state["config"] = check_config(recorded, f"{path} (its config)")
    state[RECORDED_CONFIG] = recorded
    return state


def _odd_carried_entries(state: dict) -> str | None:
    """What is wrong with the entries a resume carries on with, `best` {epoch, volume_dice}, `guard` {skipped,
    consecutive, rollbacks} and `metrics` (numbers, NaN included), as training writes them; None when nothing is."""
    def count(value: Any) -> bool:
        return type(value) is int and value >= 0

    best = state.get("best")
    if best:  # {} or absent: no best yet
        if set(best) != {"epoch", "volume_dice"}:
            return f"'best' should hold epoch and volume_dice, not {quoted(list(best))}"
        if not (best["epoch"] is None or count(best["epoch"])):
            return f"'best' epoch should be a whole number, not {quoted(best['epoch'], 40)}"
        dice = best["volume_dice"]
        if not (dice is None or (type(dice) in (int, float) and math.isfinite(dice))):
            return f"'best' volume_dice should be a finite number, not {quoted(dice, 40)}"
    for key, value in (state.get("guard") or {}).items():
        if key in ("skipped", "consecutive", "rollbacks") and not count(value):
            return f"'guard' {key} should be a whole number, not {quoted(value, 40)}"
    for key, value in (state.get("metrics") or {}).items():  # a resume writes them into its next checkpoint
        if key in METRIC_KEYS and not (value is None or type(value) in (int, float)):
            return f"'metrics' {key} should be a number, not {type(value).__name__}"
    return None


def non_finite_weights(model_state: dict) -> list[str]:
    """Names of the floating-point tensors in a model state dict holding NaN or infinity.

    A tensor whose sum is finite holds neither (a NaN makes any sum NaN, an infinity makes it infinite or NaN),
    so only a tensor whose sum is not (or overflowed) is looked at element by element; one pass of reading, no
    boolean copy of every weight."""
    import torch

    return [k for k, v in model_state.items()
            if v.is_floating_point() and not bool(torch.isfinite(v.sum())) and not bool(torch.isfinite(v).all())]


def _value_kind(tensor) -> str:
    """What a tensor holds, as far as loading it into another tensor goes: copying between kinds casts
    (a complex weight loses its imaginary part, an integer one becomes whole-number floats)."""
    import torch

    if tensor.is_complex():
        return "complex"
    if tensor.is_floating_point():
        return "floating-point"
    return "boolean" if tensor.dtype == torch.bool else "integer"


def check_weights_fit(weights: dict, target: dict, path: str | os.PathLike) -> None:
    """One line naming the file and the key when a tensor of `weights` holds another kind of value than the
    entry of `target` (a model's own state dict) it would be loaded into: `load_state_dict` casts silently,
    so an integer or complex tensor would become a float parameter (and a float one an integer buffer such
    as BatchNorm's num_batches_tracked). Shapes and missing keys are `load_state_dict`'s own checks; NaN and
    infinity are `non_finite_weights`'."""
    for key, own in target.items():
        value = weights.get(key)
        if value is None or _value_kind(value) == _value_kind(own):
            continue
        raise LiverctlError(
            f"refused: weight {quoted(key)} holds {_value_kind(value)} values ({str(value.dtype).removeprefix('torch.')}) "
            f"where the model holds {_value_kind(own)} ones ({str(own.dtype).removeprefix('torch.')}); the file is "
            "damaged or was not written by liverctl train",
            path=path,
        )


def check_optimizer_state_fits(saved: dict, optimizer, path: str | os.PathLike) -> None:
    """One line naming the file when a saved optimiser state would not fit `optimizer`'s parameters:
    `Optimizer.load_state_dict` checks the group sizes but neither the shapes of a parameter's moments
    (`exp_avg` of another shape failed at the first step, mid-run) nor their kind (an integer or complex
    tensor was cast into the parameter's float) nor NaN (it reached the weights at the first step)."""
    import torch

    groups, state = saved.get("param_groups"), saved.get("state")
    if not isinstance(groups, list) or not isinstance(state, dict):
        return  # the layout is load_state_dict's to refuse
    saved_ids = [i for g in groups if isinstance(g, dict) and isinstance(g.get("params"), list) for i in g["params"]]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    # strict=False: a count that differs is load_state_dict's own one-line refusal
    for n, (saved_id, param) in enumerate(zip(saved_ids, params, strict=False)):
        entry = state.get(saved_id) if isinstance(saved_id, (int, str)) else None
        for key, value in (entry.items() if isinstance(entry, dict) else ()):
            if key == "step" or not isinstance(value, torch.Tensor):
                continue
            where = f"optimizer state {quoted(key)} of parameter {n}"
            if tuple(value.shape) != tuple(param.shape):
                problem = f"has shape {tuple(value.shape)} where the parameter has {tuple(param.shape)}"
            elif _value_kind(value) != _value_kind(param):
                problem = f"holds {_value_kind(value)} values where the parameter holds {_value_kind(param)} ones"
            elif value.is_floating_point() and not bool(torch.isfinite(value).all()):
                problem = "holds NaN or infinity"
            else:
                continue
            raise LiverctlError(
                f"refused: {where} {problem}; the file is damaged or was not written by liverctl train", path=path
            )


def _check_plain(value: Any, where: str) -> None:
    """TypeError unless `value` is plain data that `torch.load(weights_only=True)` reads back."""
    import torch

    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {quoted(k)} is a {type(k).__name__}, not plain data")
            _check_plain(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not (value is None or type(value) in (str, int, float, bool) or isinstance(value, torch.Tensor)):
        raise TypeError(f"{where} is a {type(value).__name__}, not plain data")  # numpy scalars included


def rng_to_plain(rng: dict | None) -> dict | None:
    """{python, numpy, torch, cuda} RNG states as plain data (lists of ints, tensors)."""
    if not rng:
        return None
    out = dict(rng)
    python = rng.get("python")
    if python is not None:
        version, internal, gauss = python
        out["python"] = [int(version), [int(x) for x in internal], gauss]
    numpy_state = rng.get("numpy")
    if numpy_state is not None and not isinstance(numpy_state, dict):
        name, keys, pos, has_gauss, cached = numpy_state
        out["numpy"] = {"bit_generator": str(name), "keys": [int(x) for x in keys], "pos": int(pos),
                        "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    return out


def rng_from_plain(rng: dict) -> tuple:
    """(python state, numpy state) for `random.setstate` / `np.random.set_state`, from `rng_to_plain`."""
    import numpy as np

    version, internal, gauss = rng["python"]
    n = rng["numpy"]
    numpy_state = (n["bit_generator"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"],
                   n["cached_gaussian"])
    return (version, tuple(internal), gauss), numpy_state


def convert_checkpoint(old: str | os.PathLike, new: str | os.PathLike, *, trust_code: bool = False) -> Path:
    """Rewrite a checkpoint of the previous format as plain data (loadable with weights_only=True).

    Reading the old file unpickles arbitrary Python objects, i.e. RUNS ANY CODE IN IT: only with
    `trust_code=True`, for files whose source the user trusts. Returns the new path (+ its .json sidecar).
    """
    import torch

    old, new = Path(old), Path(new)
    if not trust_code:
        raise LiverctlError(
            "converting unpickles the whole file, which runs any code it contains; "
            "add --trust-code only if you trust where it came from",
            path=old,
        )
    if not old.is_file():
        raise LiverctlError("checkpoint not found", path=old)
    if new.suffix != ".pt":
        raise LiverctlError("the converted checkpoint's name must end in .pt (its .json goes beside it)", path=new)
    try:
        state = torch.load(old, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise LiverctlError(f"cannot read checkpoint ({type(exc).__name__}: {exc})", path=old) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise LiverctlError(f"not a liverctl checkpoint (expected format {FORMAT})", path=old)
    try:
        state["rng"] = rng_to_plain(state.get("rng"))
        state.update({k: _plain_numbers(v) for k, v in state.items() if k not in TENSOR_KEYS})
        _check_plain(state, "checkpoint")
    except (TypeError, ValueError) as exc:
        raise LiverctlError(f"cannot convert: {exc}", path=old) from None
    _atomic_write(new, lambda fh: torch.save(state, fh))
    sidecar = {k: v for k, v in state.items() if k not in TENSOR_KEYS}
    text = json.dumps(json_value(sidecar), indent=1, allow_nan=False)
    _atomic_write(new.with_suffix(".json"), lambda fh: fh.write(text.encode("utf-8")))
    load_checkpoint(new)  # what every later reader does
    return new


def _plain_numbers(value: Any) -> Any:
    """Numpy scalars to Python numbers, through dicts, lists and tuples; everything else kept."""
    if isinstance(value, dict):
        return {k: _plain_numbers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain_numbers(v) for v in value)
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


def read_sidecar(run_dir: str | os.PathLike, which: str) -> dict | None:
    """The JSON sidecar of a checkpoint, or None when there is none or it is not a JSON object (no torch)."""
    path = checkpoint_path(run_dir, which).with_suffix(".json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # missing, unreadable, not UTF-8 or JSON, nested absurdly
        return None
    return data if isinstance(data, dict) else None

"""Self-describing checkpoints, written atomically, and loading a trained run's model.

`runs/<name>/checkpoints/<which>.pt` is a `torch.save` dict (see ARCHITECTURE.md, Runs) and
`<which>.json` beside it holds the same minus tensors, so that `liverctl runs` needs no torch.
Writes go to a temporary file in the same folder, are fsynced, then renamed over the old file:
a crash leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from liverctl.errors import LiverctlError

FORMAT = "liverctl-checkpoint/1"
CHECKPOINT_DIR = "checkpoints"
TENSOR_KEYS = ("model", "optimizer", "scheduler", "scaler", "rng")


def checkpoint_path(run_dir: str | os.PathLike, which: str) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"{which}.pt"


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        try:
            return _json_safe(value.item())
        except (TypeError, ValueError):
            pass
    return str(value)


def save_checkpoint(run_dir: str | os.PathLike, which: str, state: dict) -> Path:
    """Write `<which>.pt` and its `<which>.json` sidecar atomically; returns the .pt path.

    `state` holds format/run/preset/config/epoch/global_step/metrics/best/versions and the tensor
    parts model/optimizer/scheduler/scaler/rng.
    """
    import torch

    path = checkpoint_path(run_dir, which)
    state = {"format": FORMAT, **state}
    _atomic_write(path, lambda fh: torch.save(state, fh))
    sidecar = {k: v for k, v in state.items() if k not in TENSOR_KEYS}
    text = json.dumps(_json_safe(sidecar), indent=1, allow_nan=False)
    _atomic_write(path.with_suffix(".json"), lambda fh: fh.write(text.encode("utf-8")))
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict:
    """The dict written by `save_checkpoint`; LiverctlError if missing, unreadable or foreign."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise LiverctlError("checkpoint not found", path=path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise LiverctlError(f"cannot read checkpoint ({type(exc).__name__}: {exc})", path=path) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise LiverctlError(f"not a liverctl checkpoint (expected format {FORMAT})", path=path)
    return state


def read_sidecar(run_dir: str | os.PathLike, which: str) -> dict | None:
    """The JSON sidecar of a checkpoint, or None when there is none (no torch needed)."""
    path = checkpoint_path(run_dir, which).with_suffix(".json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def load_run_model(run_dir: str | os.PathLike, which: str = "best", device: str = "cpu"):
    """(model in eval mode on `device`, resolved config) from a run's checkpoint.

    The model takes (N, 2 * cfg.data.context + 1, S, S) with S = cfg.data.input_size and returns
    logits (N, 1, S, S). The config comes from the checkpoint itself, so the run folder's config.toml
    is not needed.
    """
    from liverctl.models import build_model

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LiverctlError("run folder not found", path=run_dir)
    path = checkpoint_path(run_dir, which)
    if not path.is_file():
        others = sorted(p.stem for p in (run_dir / CHECKPOINT_DIR).glob("*.pt"))
        hint = f"; available: {', '.join(others)}" if others else "; the run has no checkpoint yet"
        raise LiverctlError(f"no '{which}' checkpoint{hint}", path=run_dir)
    state = load_checkpoint(path, map_location="cpu")
    cfg = state["config"]
    model = build_model(cfg, pretrained=False)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg

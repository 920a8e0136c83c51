"""Model factory over segmentation-models-pytorch, with a pretrained-weights check that never hangs, and a
trained run's model from its checkpoint (`load_run_model`).

smp fetches ImageNet encoder weights from the Hugging Face hub; with no network that fails only after
~23 s (47 s for `tu-` encoders). `build_model` therefore looks in the local cache first, then tries one
short connection, and fails within seconds with what to do instead.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from liverctl.config import in_channels, is_none
from liverctl.device import one_torch_thread
from liverctl.errors import LiverctlError
from liverctl.printable import first_line, one_line, quoted
from liverctl.runs.checkpoint import (
    TENSOR_KEYS,
    check_weights_fit,
    load_checkpoint,
    load_plain,
    non_finite_weights,
)
from liverctl.runs.folder import CHECKPOINT_DIR, checkpoint_path

CONNECT_TIMEOUT_S = 1.5
# smp's architectures (`smp.MODEL_ARCHITECTURES_MAPPING`, which it matches without case), named here so that
# `liverctl.config.validate` checks model.arch without importing smp and torch (tests/train/test_models.py
# holds the two lists equal).
ARCHITECTURES = ("Unet", "UnetPlusPlus", "MAnet", "Linknet", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus", "PAN",
                 "UPerNet", "Segformer", "DPT")


def check_arch(arch: str) -> None:
    """LiverctlError for a model.arch smp does not know, with the valid names and the nearest."""
    from liverctl.suggest import hint_for, nearest

    known = {name.lower(): name for name in ARCHITECTURES}
    if str(arch).lower() not in known:
        near = hint_for(known[name] for name in nearest(str(arch).lower(), known))
        hint = f" ({near})" if near else ""
        raise LiverctlError(f"model.arch: unknown architecture {quoted(arch)}{hint}; valid: {', '.join(ARCHITECTURES)}")


def build_model(cfg: dict, pretrained: bool | None = None):
    """The smp model of `cfg["model"]`, one output channel of logits.

    Shape: input (N, 2 * data.context + 1, H, W) with H, W multiples of 32 -> logits (N, 1, H, W).
    `pretrained=None` follows `model.encoder_weights` / `model.encoder_weights_path`; False builds
    without any weights (for loading a checkpoint); True insists on them.
    """
    import segmentation_models_pytorch as smp

    m = cfg["model"]
    weights = None if is_none(m["encoder_weights"]) else m["encoder_weights"]
    weights_path = None if is_none(m["encoder_weights_path"]) else Path(m["encoder_weights_path"])
    if pretrained is False:
        weights, weights_path = None, None
    elif pretrained is True and weights is None and weights_path is None:
        weights = "imagenet"
    if weights_path is not None:
        weights = None  # the local file replaces the download
    elif weights is not None:
        check_weights_available(m["encoder"], weights)

    try:
        model = smp.create_model(
            m["arch"],
            encoder_name=m["encoder"],
            encoder_weights=weights,
            encoder_depth=m["encoder_depth"],
            in_channels=in_channels(cfg),
            classes=1,
            **_decoder_kwargs(m),
        )
    except (KeyError, ValueError, TypeError, AssertionError, RuntimeError) as exc:
        if (unknown := _unknown_encoder(m["encoder"])) is not None:
            raise LiverctlError(unknown) from None
        if isinstance(exc, RuntimeError):  # a download that failed, or a bug: as any other error below
            if weights is None:
                raise
            raise LiverctlError(_no_weights_message(m["encoder"], weights, f"download failed ({exc})")) from None
        detail = first_line(exc, 300) or type(exc).__name__
        raise LiverctlError(
            f"cannot build model {m['arch']} / {m['encoder']} (model.encoder_depth={m['encoder_depth']}): {detail}"
        ) from None
    except Exception as exc:  # network failures of the hub surface as many types
        if weights is None:
            raise
        raise LiverctlError(_no_weights_message(m["encoder"], weights, f"download failed ({exc})")) from None
    if weights_path is not None:
        load_encoder_weights(model, weights_path)
    return model


def _unknown_encoder(encoder: str) -> str | None:
    """The one-line refusal of an encoder name neither smp nor timm (`tu-NAME`) knows, with the nearest
    names; None for a known one."""
    from liverctl.suggest import hint_for, nearest

    if encoder.startswith("tu-"):
        import timm

        if timm.is_model(encoder[3:]):
            return None
        near = ["tu-" + name for name in nearest(encoder[3:], timm.list_models(), n=3)]
    else:
        from segmentation_models_pytorch.encoders import encoders

        if encoder in encoders:
            return None
        near = nearest(encoder, encoders, n=3)
    hint = hint_for(near) or "see smp's encoder list, or tu-NAME for a timm model"
    return f"model.encoder: unknown encoder {quoted(encoder)}; {hint}"


def _decoder_kwargs(m: dict) -> dict:
    """`model.decoder_channels` for the architectures whose decoder takes a list of channels per stage (Unet,
    UnetPlusPlus, MAnet); the others (FPN, DeepLabV3Plus, Segformer, ...) keep their own decoder, whose
    `decoder_channels` is one number or absent (DPT would hand the list on to its encoder)."""
    import inspect

    import segmentation_models_pytorch as smp

    model_class = getattr(smp, "MODEL_ARCHITECTURES_MAPPING", {}).get(str(m["arch"]).lower())
    if model_class is None:  # smp.create_model names the architectures it knows
        return {"decoder_channels": list(m["decoder_channels"])}
    param = inspect.signature(model_class.__init__).parameters.get("decoder_channels")
    if param is None or not isinstance(param.default, (list, tuple)):
        return {}
    if len(m["decoder_channels"]) != m["encoder_depth"]:
        raise LiverctlError(
            f"model.decoder_channels needs {m['encoder_depth']} entries for {m['arch']} (one per encoder stage, "
            f"model.encoder_depth), got {list(m['decoder_channels'])}"
        )
    return {"decoder_channels": list(m["decoder_channels"])}


def _hub_files(encoder: str, weights: str) -> list[tuple[str, str, str | None]]:
    """(repo_id, filename, revision) candidates where the hub keeps this encoder's weights."""
    if encoder.startswith("tu-"):
        import timm

        try:
            cfg = timm.models.get_pretrained_cfg(encoder[3:])
        except Exception:
            cfg = None
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not repo:
            return []
        return [(repo, "model.safetensors", None), (repo, "pytorch_model.bin", None)]
    from segmentation_models_pytorch.encoders import encoders

    if encoder not in encoders:
        raise LiverctlError(f"unknown encoder {quoted(encoder)} (model.encoder); see smp's encoder list")
    settings = encoders[encoder]["pretrained_settings"]
    if weights not in settings:
        raise LiverctlError(
            f"encoder {quoted(encoder)} has no {quoted(weights)} weights; available: {', '.join(settings) or 'none'}"
        )
    s = settings[weights]
    return [(s["repo_id"], "model.safetensors", s.get("revision"))]


def _cached(files: list[tuple[str, str, str | None]]) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for repo, filename, revision in files:
        try:
            hit = try_to_load_from_cache(repo, filename, revision=revision)
        except Exception:
            hit = None
        if isinstance(hit, str) and os.path.exists(hit):
            return True
    return False


def hub_reachable(timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """One TCP connection to the hub's host with a short timeout (no HTTP request)."""
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_env() -> bool:
    return any(
        os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _no_weights_message(encoder: str, weights: str, why: str) -> str:
    return (
        f"pretrained {quoted(weights)} weights for encoder {quoted(encoder)} are not available: {why}. "
        f"Train from scratch with `--set model.encoder_weights=none`, or put a weights file on disk and "
        f"set `--set model.encoder_weights_path=PATH`, or pre-download into {_hub_cache_dir()}"
    )


def check_weights_available(encoder: str, weights: str) -> None:
    """Return quickly if the weights are cached or the hub answers; else raise LiverctlError (seconds).
    An encoder nobody knows is said as such first."""
    if (unknown := _unknown_encoder(encoder)) is not None:
        raise LiverctlError(unknown)
    files = _hub_files(encoder, weights)
    if files and _cached(files):
        return
    if _offline_env():
        raise LiverctlError(_no_weights_message(encoder, weights, "not in the local cache and HF_HUB_OFFLINE is set"))
    if not hub_reachable():
        raise LiverctlError(_no_weights_message(encoder, weights, "not in the local cache and no network"))


def _adapt_first_conv(weight, channels: int):
    """Fit a (O, 3, k, k) pretrained first convolution to `channels` inputs, as smp does."""
    if channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-channels // weight.shape[1])
    return weight.repeat(1, reps, 1, 1)[:, :channels] * (weight.shape[1] / channels)


def read_encoder_weights(path: Path) -> dict:
    """The encoder's tensors in a local file (an encoder state dict, or a whole-model one with `encoder.` keys),
    by name; LiverctlError naming the file when it is missing or holds no such table."""
    import torch

    path = Path(path).expanduser()  # a ~/x.pth in a config or --set, as data.store (LiverStore.open)
    if not path.is_file():
        raise LiverctlError("encoder weights file not found (model.encoder_weights_path)", path=path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as exc:
            raise LiverctlError(f"cannot read encoder weights: {exc}", path=path) from None
    else:
        state = load_plain(path, what="encoder weights")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise LiverctlError("encoder weights file is not a table of tensors (a state dict)", path=path)
    state = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    if not state:
        raise LiverctlError("encoder weights file holds no tensors", path=path)
    return state


def load_encoder_weights(model, path: Path) -> None:
    """Load `read_encoder_weights(path)` into the model's encoder (a first conv of other channels adapted)."""
    state = read_encoder_weights(path)
    own = model.encoder.state_dict()
    for key, value in list(state.items()):
        target = own.get(key)
        # only a first convolution of the encoder's other dimensions: a claimed (10^5, 3, 10^5, 10^5) view of
        # one stored number would be summed into terabytes
        if (target is not None and value.dim() == 4 == target.dim() and value.shape[1] != target.shape[1]
                and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]):
            state[key] = _adapt_first_conv(value, target.shape[1])
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(matching) < len(own) // 2:
        raise LiverctlError(
            f"encoder weights do not match encoder '{model.encoder.__class__.__name__}' "
            f"({len(matching)} of {len(own)} tensors fit)",
            path=path,
        )
    check_weights_fit(matching, own, path)
    own.update(matching)
    model.encoder.load_state_dict(own)


def load_run_model(run_dir: str | os.PathLike, which: str = "best", device: str = "cpu"):
    """(model in eval mode on `device`, resolved config) from a run's checkpoint.

    The model takes (N, 2 * cfg.data.context + 1, S, S) with S = cfg.data.input_size and returns
    logits (N, 1, S, S). The config comes from the checkpoint itself, so the run folder's config.toml
    is not needed.
    """
    model, info = load_run_checkpoint(run_dir, which, device)
    return model, info["config"]


def _first_problem(exc: RuntimeError) -> str:
    """What load_state_dict found wrong, in one line: torch's first line only says "Error(s) in loading state_dict
    for Unet:", the problems follow (a size mismatch first where there is one)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    detail = next((line for line in lines if "size mismatch" in line), lines[1] if len(lines) > 1 else
                  lines[0] if lines else "")
    return one_line(detail, 200)


def load_run_checkpoint(run_dir: str | os.PathLike, which: str = "best", device: str = "cpu", *,
                        verify: Callable[[str], None] | None = None):
    """(model in eval mode on `device`, the checkpoint's other entries: config, epoch, cases, ...), as
    `load_run_model`; what the run recorded (e.g. the cases it trained on) comes from the .pt itself.
    `verify(sha256)`: a check of the bytes parsed (`liverctl.runs.checkpoint.load_plain`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LiverctlError("run folder not found", path=run_dir)
    path = checkpoint_path(run_dir, which)
    if not path.is_file():
        others = sorted(p.stem for p in (run_dir / CHECKPOINT_DIR).glob("*.pt"))
        hint = f"; available: {', '.join(others)}" if others else "; the run has no checkpoint yet"
        raise LiverctlError(f"no {quoted(which)} checkpoint{hint}", path=run_dir)
    with one_torch_thread():  # reading, copying and checking weights: memory work
        state = load_checkpoint(path, map_location="cpu", verify=verify)
        cfg = state["config"]
        model = build_model(cfg, pretrained=False)
        check_weights_fit(state["model"], model.state_dict(), path)
        # load_state_dict first checks every key and shape (RuntimeError), so nothing below computes on a tensor
        # the file only claims: a stride-0 view can claim 10^12 elements of one stored number, and isfinite()
        # over it tried to allocate them
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:  # a weight of another shape, a key missing or extra: what the file claims
            raise LiverctlError(f"checkpoint weights do not fit the model its config describes ({_first_problem(exc)})",
                                path=path) from None
        weights = model.state_dict()
        bad = non_finite_weights(weights)
    if bad:
        raise LiverctlError(
            f"refused: the checkpoint's weights are not finite (NaN or infinity in {len(bad)} of "
            f"{len(weights)} tensors, e.g. {bad[0]}); it would predict nothing. Use another checkpoint",
            path=path,
        )
    return model.to(device).eval(), {k: v for k, v in state.items() if k not in TENSOR_KEYS}

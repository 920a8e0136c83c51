"""Named losses and weighted sums of them, always computed in float32 outside autocast.

`loss.name` in the config is a registered name or a weighted sum: "0.5*bce + 0.5*dice",
"dice + focal", "weighted_bce + dice". Term parameters come from the other `loss.*` keys.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from liverctl.train.losses.names import parse_loss_name


def _smp():
    import segmentation_models_pytorch as smp

    return smp.losses


def _bce(p: dict) -> nn.Module:
    return _smp().SoftBCEWithLogitsLoss()


def _weighted_bce(p: dict) -> nn.Module:
    from liverctl.train.losses.weighted_bce import WeightedBCELoss

    return WeightedBCELoss(pos_weight=p["pos_weight"])


def _dice(p: dict) -> nn.Module:
    return _smp().DiceLoss(mode="binary", from_logits=True, smooth=p["smooth"])


def _focal(p: dict) -> nn.Module:
    return _smp().FocalLoss(mode="binary", gamma=p["focal_gamma"])


def _tversky(p: dict) -> nn.Module:
    return _smp().TverskyLoss(
        mode="binary", from_logits=True, smooth=p["smooth"], alpha=p["tversky_alpha"], beta=p["tversky_beta"]
    )


def _lovasz(p: dict) -> nn.Module:
    return _smp().LovaszLoss(mode="binary", per_image=False, from_logits=True)


def _mcc(p: dict) -> nn.Module:
    from liverctl.train.losses.mcc import MCCLossOnLogits

    return MCCLossOnLogits()


def _log_cosh_dice(p: dict) -> nn.Module:
    from liverctl.train.losses.log_cosh_dice import LogCoshDiceLoss

    return LogCoshDiceLoss(smooth=p["smooth"])


def _focal_tversky(p: dict) -> nn.Module:
    from liverctl.train.losses.focal_tversky import FocalTverskyLoss

    return FocalTverskyLoss(
        alpha=p["tversky_alpha"], beta=p["tversky_beta"], gamma=p["focal_tversky_gamma"], smooth=p["smooth"]
    )


# The same names as `names.LOSS_NAMES`, in its order (tests/train/test_losses.py holds them equal).
LOSSES: dict[str, Callable[[dict], nn.Module]] = {
    "bce": _bce,
    "weighted_bce": _weighted_bce,
    "dice": _dice,
    "focal": _focal,
    "tversky": _tversky,
    "lovasz": _lovasz,
    "mcc": _mcc,
    "log_cosh_dice": _log_cosh_dice,
    "focal_tversky": _focal_tversky,
}


class WeightedSum(nn.Module):
    """sum_i w_i * loss_i(logits, target)."""

    def __init__(self, terms: list[tuple[float, str, nn.Module]]):
        super().__init__()
        self.weights = [w for w, _, _ in terms]
        self.names = [n for _, n, _ in terms]
        self.losses = nn.ModuleList([m for _, _, m in terms])

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros(())
        for w, loss in zip(self.weights, self.losses, strict=True):
            total = total + w * loss(logits, target)
        return total


class Float32Loss(nn.Module):
    """Runs the wrapped loss on float32 logits and targets with autocast off.

    Shape: logits (N, 1, H, W) of any float dtype, target (N, 1, H, W) or (N, H, W) -> float32 scalar.
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.dim() == logits.dim() - 1:
            target = target.unsqueeze(1)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self.inner(logits.float(), target.float())


def build_loss(cfg: dict) -> Float32Loss:
    """The loss named by `cfg["loss"]["name"]` (a whole config or its `loss` section)."""
    params = cfg["loss"] if "loss" in cfg else cfg
    terms = [(w, name, LOSSES[name](params)) for w, name in parse_loss_name(params["name"])]
    return Float32Loss(WeightedSum(terms))

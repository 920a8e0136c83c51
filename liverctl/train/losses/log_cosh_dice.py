"""Log-Cosh Dice loss (Jadon 2020): log(cosh(1 - Dice)), a smoothed Dice loss."""

from __future__ import annotations

import torch
from torch import nn

from liverctl.train.losses.soft_counts import soft_dice


class LogCoshDiceLoss(nn.Module):
    """Shape: logits (N, 1, H, W), target (N, 1, H, W) in {0, 1} -> scalar."""

    def __init__(self, smooth: float = 1.0):
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dice_loss = 1.0 - soft_dice(logits, target, self.smooth)
        return torch.log(torch.cosh(dice_loss))

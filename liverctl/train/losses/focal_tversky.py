"""Focal Tversky loss (Abraham & Khan 2019): (1 - Tversky index) ** gamma.

With gamma < 1 the power's gradient is infinite at a perfect prediction (1 - TI = 0), which times the
zero gradient of a saturated sigmoid gives NaN; the base is therefore clamped away from zero.
"""

from __future__ import annotations

import torch
from torch import nn

from liverctl.train.losses.soft_counts import soft_counts


class FocalTverskyLoss(nn.Module):
    """Shape: logits (N, 1, H, W), target (N, 1, H, W) in {0, 1} -> scalar.

    alpha weighs false positives, beta false negatives.
    """

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, gamma: float = 0.75, smooth: float = 1.0):
        super().__init__()
        self.alpha, self.beta, self.gamma, self.smooth = alpha, beta, gamma, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        tp, fp, fn = soft_counts(logits, target)
        index = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)
        return (1.0 - index).clamp_min(1e-6) ** self.gamma

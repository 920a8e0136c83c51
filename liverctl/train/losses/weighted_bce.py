"""Binary cross-entropy with a weight on the positive (liver) pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WeightedBCELoss(nn.Module):
    """Shape: logits (N, 1, H, W), target (N, 1, H, W) in {0, 1} -> scalar (mean over pixels)."""

    def __init__(self, pos_weight: float = 5.0):
        super().__init__()
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight.to(logits))

"""Matthews correlation loss on logits: smp's MCCLoss expects probabilities, so apply the sigmoid first."""

from __future__ import annotations

import torch
from segmentation_models_pytorch.losses import MCCLoss
from torch import nn


class MCCLossOnLogits(nn.Module):
    """Shape: logits (N, 1, H, W), target (N, 1, H, W) in {0, 1} -> scalar (1 - MCC)."""

    def __init__(self):
        super().__init__()
        self.mcc = MCCLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.mcc(torch.sigmoid(logits), target)

"""Soft (probabilistic) true/false positive counts, the shared maths of the overlap losses.

Always called on float32 tensors (see `registry.Float32Loss`): pixel sums over a 512 x 512 batch exceed
float16's largest value (65504), which is how fp16 Dice losses turn into inf / NaN (smp issue #463).
"""

from __future__ import annotations

import torch


def soft_counts(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft tp, fp, fn summed over the whole batch.

    Shape: logits (N, 1, H, W) float32, target (N, 1, H, W) float32 in {0, 1} -> three scalars.
    """
    probs = torch.sigmoid(logits)
    tp = (probs * target).sum()
    fp = (probs * (1.0 - target)).sum()
    fn = ((1.0 - probs) * target).sum()
    return tp, fp, fn


def soft_dice(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice coefficient in [0, 1] over the batch. Shape: (N, 1, H, W) twice -> scalar."""
    tp, fp, fn = soft_counts(logits, target)
    return (2.0 * tp + smooth) / (2.0 * tp + fp + fn + smooth)

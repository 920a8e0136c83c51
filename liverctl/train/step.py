"""One training step as the trainer takes it (`guarded_step`): forward under the run's autocast, the loss in
float32 outside it, backward through the GradScaler, gradient clipping, and the NaN guard's decision.
The loop and `liverctl bench` both call it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from liverctl.train import distributed
from liverctl.train.nan_guard import OK, NaNGuard
from liverctl.train.session import Session


@dataclass
class StepResult:
    loss: float
    grad_norm: float | None
    action: str  # OK or what the guard asks for
    where: str | None  # "loss" / "grad" when non-finite
    flags: list[bool]  # the caller's flags, OR-ed over all ranks


def guarded_step(s: Session, images, masks, guard: NaNGuard, *, inject_nan: bool = False, flags: list[bool] = ()) -> StepResult:
    """One optimiser step unless the loss or the gradient is non-finite (then the guard decides).

    Shape: images (B, C, S, S), masks (B, 1, S, S). Ranks agree on skipping before any backward, since
    a DDP backward on one rank only would hang the others.
    """
    import torch

    with s.precision.autocast_context(s.device):
        logits = s.model(images)
    loss = s.loss_fn(logits, masks)  # float32, outside autocast
    if inject_nan:  # testing hook (train.inject_nan_at_steps)
        loss = loss * float("nan")
    loss_value = float(loss.detach())
    # one collective: whether any rank's loss is non-finite, the flags OR-ed, and the loss of the whole
    # (global) batch, the mean over ranks that DDP's averaged gradients follow: what the events and the
    # epoch's train loss report (rank 0's own loss is a batch of 1 / world of it)
    finite = math.isfinite(loss_value)
    *counts, loss_sum = distributed.sum_across(
        s.info, [float(not finite), *(float(bool(f)) for f in flags), loss_value if finite else 0.0], s.device
    )
    loss_bad, flags = counts[0] > 0, [c > 0 for c in counts[1:]]
    if not loss_bad:
        loss_value = loss_sum / s.info.world
    if loss_bad:
        s.optimizer.zero_grad(set_to_none=True)
        return StepResult(loss_value, None, guard.non_finite_step(), "loss", flags)
    s.scaler.scale(loss).backward()
    s.scaler.unscale_(s.optimizer)
    clip = s.cfg["optim"]["grad_clip"] or float("inf")
    grad_norm = float(torch.nn.utils.clip_grad_norm_(s.raw_model.parameters(), clip))
    where = None
    if math.isfinite(grad_norm):
        s.scaler.step(s.optimizer)
        action = guard.finite_step()
    elif s.precision.needs_scaler and s.scaler.get_scale() > 1.0:
        s.scaler.step(s.optimizer)  # an fp16 overflow: the scaler skips the step and lowers its scale
        action = OK
    else:
        action, where = guard.non_finite_step(), "grad"
    s.scaler.update()
    s.optimizer.zero_grad(set_to_none=True)
    return StepResult(loss_value, grad_norm, action, where, flags)

"""Small trainings on the tiny store, shared by the training tests on the CPU and on CUDA.

`tiny_cfg(store, *overrides)`: the demo preset at 64 px with a small MobileNetV3 U-Net (`SMALL_NET`: its
checkpoints take 4 MB where the ResNet18 one's took 137 MB, and its steps several times faster) and one loader
worker, 2 epochs of 2 steps. The demo preset's own ResNet18 still trains in the CLI tests of test_train.py.
`SMALL_MODEL`: `SMALL_NET` and `data.num_workers=0` (batches loaded in the training process: no worker to
start). `PoisonedGradient`: a loss whose
gradient is NaN on chosen training calls (the `poisoned_loss` fixture in conftest.py registers it).
`finite_weights(state)`: every floating-point weight of a checkpoint's model is finite.
"""

from __future__ import annotations

import torch

from liverctl.config import resolve_config


def tiny_cfg(store, *more):
    return resolve_config(
        "demo",
        [
            "data.input_size=64",
            "data.num_workers=1",
            *SMALL_NET,
            "train.epochs=2",
            "train.steps_per_epoch=2",
            "train.batch_size=4",
            "train.log_every=1",
            "optim.warmup_steps=0",
            *more,
        ],
        {"data.store": str(store)},
    )


# A small network with BatchNorm, enough for the tests that only need some weights to change
SMALL_NET = ("model.encoder='tu-mobilenetv3_small_050'", "model.decoder_channels=[16, 8, 8, 8, 8]")
# and data.num_workers=0 (the loaders start no worker process)
SMALL_MODEL = (*SMALL_NET, "data.num_workers=0")


class PoisonedGradient(torch.nn.Module):
    """BCE whose value stays finite but whose gradient is NaN on the chosen training calls
    (sqrt(0 * x): value 0, gradient inf * 0). Validation (no grad) is never poisoned."""

    def __init__(self, calls):
        super().__init__()
        self.calls, self.n = set(calls), 0

    def forward(self, logits, target):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        if torch.is_grad_enabled():
            self.n += 1
            if self.n - 1 in self.calls:
                loss = loss + torch.sqrt(logits.sum() * 0.0)
        return loss


def finite_weights(state: dict) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in state["model"].values() if t.is_floating_point())

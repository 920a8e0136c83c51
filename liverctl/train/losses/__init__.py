"""Loss registry (`build_loss`, `LOSSES`): smp.losses where they exist, the rest one per file."""

from liverctl.train.losses.registry import LOSSES, Float32Loss, WeightedSum, build_loss, parse_loss_name

__all__ = ["LOSSES", "Float32Loss", "WeightedSum", "build_loss", "parse_loss_name"]

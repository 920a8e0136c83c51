"""Loss registry (`build_loss`, `LOSSES`): smp.losses where they exist, the rest one per file.

The names alone (`names.LOSS_NAMES`, `parse_loss_name`) import without torch; the registry is loaded on
first use of one of its names, so that checking a config's `loss.name` costs no torch import."""

from liverctl.train.losses.names import LOSS_NAMES, parse_loss_name

__all__ = ["LOSSES", "LOSS_NAMES", "Float32Loss", "WeightedSum", "build_loss", "parse_loss_name"]


def __getattr__(name: str):
    if name in ("LOSSES", "Float32Loss", "WeightedSum", "build_loss"):
        from liverctl.train.losses import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The registered loss names and `parse_loss_name`, without torch: `liverctl.config.validate` checks
`loss.name` with it before any heavy import (`registry.LOSSES` builds each name's module)."""

from __future__ import annotations

import math

from liverctl.errors import LiverctlError
from liverctl.printable import quoted

LOSS_NAMES = ("bce", "weighted_bce", "dice", "focal", "tversky", "lovasz", "mcc", "log_cosh_dice", "focal_tversky")


def parse_loss_name(text: str) -> list[tuple[float, str]]:
    """ "0.5*bce + 0.5*dice" -> [(0.5, "bce"), (0.5, "dice")]; unknown names list the valid ones."""
    terms = []
    for raw in text.split("+"):
        part = raw.strip()
        weight = 1.0
        if "*" in part:
            w, part = (s.strip() for s in part.split("*", 1))
            try:
                weight = float(w)
            except ValueError:
                raise LiverctlError(f"loss.name: bad weight {quoted(w)} in {quoted(text)}") from None
            if not (math.isfinite(weight) and weight >= 0):  # a negative weight makes training maximise that term
                raise LiverctlError(f"loss.name: weight {quoted(w)} in {quoted(text)} must be a finite number >= 0")
        if part not in LOSS_NAMES:
            raise LiverctlError(f"loss.name: unknown loss {quoted(part)}; valid losses: {', '.join(LOSS_NAMES)}")
        terms.append((weight, part))
    if not any(weight > 0 for weight, _ in terms):  # a loss that is always 0 trains nothing
        raise LiverctlError(f"loss.name: the weights in {quoted(text)} are all 0; give at least one a positive weight")
    return terms

"""liverctl/report/plots.py: the overlays' colours stay apart for readers with a colour-vision deficiency."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from matplotlib.colors import to_rgb

from liverctl.report import plots

# Machado, Oliveira and Fernandes (2009), severity 1.0: linear RGB as a protanope, deuteranope or tritanope sees it
DEFICIENCIES = {
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
    "typical": np.eye(3).tolist(),
}
MIN_DELTA_E = 25.0  # CIELAB distance (1976): about 2.3 is just noticeable; 25 apart at a glance


def _linear(rgb):
    c = np.asarray(rgb, dtype=float)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _lab(linear_rgb):
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ np.clip(linear_rgb, 0, 1)
    t = xyz / np.array([0.9505, 1.0, 1.089])
    f = np.where(t > 0.008856, np.cbrt(t), 7.787 * t + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def closest_pair(colours, deficiency: str) -> float:
    """The smallest CIELAB distance between any two of `colours` as seen with `deficiency`."""
    seen = [_lab(np.asarray(DEFICIENCIES[deficiency]) @ _linear(to_rgb(c))) for c in colours]
    return min(float(np.linalg.norm(a - b)) for a, b in itertools.combinations(seen, 2))


@pytest.mark.parametrize("deficiency", list(DEFICIENCIES))
def test_the_overlay_colours_stay_apart_with_each_colour_vision_deficiency(deficiency):
    """The error map's agreement (yellow) and missed region (green) were 14 units apart to a protanope, the
    outlines (lime, red) 28 to a deuteranope."""
    fills = [rgba[:3] for rgba in plots.ERROR_FILLS.values()]
    assert closest_pair(fills, deficiency) >= MIN_DELTA_E
    assert closest_pair([plots.LABEL_LINE, plots.PREDICTION_LINE], deficiency) >= MIN_DELTA_E


def test_the_yardstick_tells_red_from_green_only_with_typical_colour_vision():
    assert closest_pair(["#00cc00", "#ffd900"], "typical") > MIN_DELTA_E
    assert closest_pair(["#00cc00", "#ffd900"], "protanopia") < MIN_DELTA_E

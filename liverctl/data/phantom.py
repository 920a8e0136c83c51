"""The synthetic CT phantom, drawn one axial slice at a time (`render_case`): air outside an elliptical
body, subcutaneous and visceral fat, an abdominal wall of muscle, a liver made of lobes whose outline and size
change smoothly from slice to slice (with a few darker lesions), neighbours of similar density (spleen,
kidneys, stomach, vessels, bowel), lung bases above the liver, bone (spine, ribs) and noise. Everything is
drawn from `numpy.random.default_rng([seed, case_number])`. Written to disk by `liverctl.data.synth`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

AIR, FAT, VISCERAL_FAT, MUSCLE, LUNG, BOWEL_GAS = -1000.0, -100.0, -85.0, 45.0, -850.0, -950.0
OUTSIDE_FOV = -1024.0
NOISE_HU = 15.0


class _Slice:
    """One axial slice being painted: HU values and the liver label, on a grid in millimetres."""

    def __init__(self, x_mm: np.ndarray, y_mm: np.ndarray):
        self.x, self.y = x_mm, y_mm
        self.hu = np.full((x_mm.size, y_mm.size), AIR, dtype=np.float32)
        self.liver = np.zeros((x_mm.size, y_mm.size), dtype=bool)

    def region(
        self,
        cx: float,
        cy: float,
        rx: float,
        ry: float,
        wobble: tuple[tuple[int, float, float], ...] = (),
    ) -> tuple[tuple[slice, slice], np.ndarray] | None:
        """Bounding box and mask of an ellipse whose radius is modulated by `(k, amplitude, phase)` terms."""
        if rx <= 0 or ry <= 0:
            return None
        reach = 1.0 + sum(abs(a) for _, a, _ in wobble)
        x0, x1 = np.searchsorted(self.x, [cx - rx * reach, cx + rx * reach])
        y0, y1 = np.searchsorted(self.y, [cy - ry * reach, cy + ry * reach])
        if x1 <= x0 or y1 <= y0:
            return None
        u = (self.x[x0:x1, None] - cx) / rx
        v = (self.y[None, y0:y1] - cy) / ry
        rho = np.sqrt(u * u + v * v)
        limit = 1.0
        if wobble:
            theta = np.arctan2(v, u)
            limit = 1.0 + sum(a * np.cos(k * theta + p) for k, a, p in wobble)
        return (slice(x0, x1), slice(y0, y1)), rho <= limit

    def paint(
        self, hu: float, *args, within: np.ndarray | None = None, liver: bool = False, **kwargs
    ) -> None:
        found = self.region(*args, **kwargs)
        if found is None:
            return
        box, mask = found
        if within is not None:
            mask = mask & within[box]
        self.hu[box][mask] = hu
        if liver:
            self.liver[box][mask] = True
        else:
            self.liver[box][mask] = False  # whatever lies on top of the liver hides it


def _profile(s: float, start: float, end: float, power: float = 0.5) -> float:
    """0 outside [start, end], rising smoothly to 1 in the middle (an organ's cross-section scale)."""
    if s <= start or s >= end:
        return 0.0
    return math.sin(math.pi * (s - start) / (end - start)) ** power


@dataclass(frozen=True)
class _Anatomy:
    """The per-case random draws: sizes, positions, densities and shape phases."""

    fov_mm: float
    slice_mm: float
    body_a: float
    body_b: float
    subq: float
    wall: float
    liver_start: float
    liver_end: float
    liver_hu: float
    liver_scale: tuple[float, float]
    liver_shift: tuple[float, float]
    liver_phases: tuple[float, ...]
    lesions: tuple[tuple[float, float, float, float, float], ...]  # x, y (mm), p, radius (mm), contrast (HU)
    spleen_hu: float
    kidney_hu: float
    stomach_hu: float
    bowel: tuple[tuple[float, float, float, float], ...]  # x, y (fraction of cavity), radius mm, phase
    rib_phases: tuple[float, ...]


def _draw_anatomy(rng: np.random.Generator) -> _Anatomy:
    liver_start = rng.uniform(0.28, 0.38)
    return _Anatomy(
        fov_mm=rng.uniform(360.0, 440.0),
        slice_mm=float(np.round(rng.uniform(1.5, 2.5), 2)),
        body_a=rng.uniform(140.0, 170.0),
        body_b=rng.uniform(100.0, 125.0),
        subq=rng.uniform(8.0, 25.0),
        wall=rng.uniform(8.0, 14.0),
        liver_start=liver_start,
        liver_end=liver_start + rng.uniform(0.35, 0.45),
        liver_hu=rng.uniform(52.0, 68.0),
        liver_scale=(rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.15)),
        liver_shift=(rng.uniform(-12.0, 12.0), rng.uniform(-10.0, 10.0)),
        liver_phases=tuple(rng.uniform(0, 2 * math.pi, 6)),
        lesions=tuple(
            (
                rng.uniform(-40.0, 10.0),
                rng.uniform(-30.0, 30.0),
                rng.uniform(0.2, 0.8),
                rng.uniform(6.0, 18.0),
                rng.uniform(20.0, 40.0),
            )
            for _ in range(int(rng.integers(0, 4)))
        ),
        spleen_hu=rng.uniform(42.0, 60.0),
        kidney_hu=rng.uniform(28.0, 45.0),
        stomach_hu=rng.uniform(25.0, 40.0),
        bowel=tuple(
            (
                rng.uniform(-0.6, 0.6),
                rng.uniform(-0.6, 0.3),
                rng.uniform(8.0, 18.0),
                rng.uniform(0, 2 * math.pi),
            )
            for _ in range(10)
        ),
        rib_phases=tuple(rng.uniform(0, 2 * math.pi, 7)),
    )


@dataclass(frozen=True)
class _Body:
    """The body outline of one slice (semi-axes a, b in mm) and its abdominal cavity (ca, cb; `mask`)."""

    a: float
    b: float
    ca: float
    cb: float
    cavity: np.ndarray


def _paint_slice(sl: _Slice, s: float, an: _Anatomy, height_mm: float) -> None:
    """Paint the axial slice at height `s` (0 = pelvis end of the scan, 1 = chest end; `height_mm` long)."""
    body = _paint_body(sl, s, an)
    _paint_neighbours(sl, s, an, body)
    _paint_liver(sl, s, an, body, height_mm)
    _paint_bone(sl, s, an, body)


def _paint_body(sl: _Slice, s: float, an: _Anatomy) -> _Body:
    """Subcutaneous fat, the abdominal wall of muscle and the visceral fat inside it."""
    a = an.body_a * (1.0 + 0.04 * math.sin(2 * math.pi * s))
    b = an.body_b * (1.0 + 0.05 * math.sin(2 * math.pi * s + 1.0))
    sl.paint(FAT, 0.0, 0.0, a, b, wobble=((2, 0.02, an.rib_phases[0]),))
    sl.paint(MUSCLE, 0.0, 0.0, a - an.subq, b - an.subq)
    ca, cb = a - an.subq - an.wall, b - an.subq - an.wall
    sl.paint(VISCERAL_FAT, 0.0, 0.0, ca, cb)
    cavity_found = sl.region(0.0, 0.0, ca, cb)
    cavity = np.zeros_like(sl.liver)
    if cavity_found is not None:
        box, mask = cavity_found
        cavity[box] = mask
    return _Body(a, b, ca, cb, cavity)


def _paint_neighbours(sl: _Slice, s: float, an: _Anatomy, body: _Body) -> None:
    """Bowel, lung bases, paraspinal muscles, kidneys, spleen, stomach and vessels."""
    a, b, ca, cb, cavity = body.a, body.b, body.ca, body.cb, body.cavity
    ls, le = an.liver_start, an.liver_end
    # Bowel loops (soft tissue with gas) fill the lower abdomen and move with height.
    for bx, by, r, ph in an.bowel:
        scale = _profile(s, 0.0, ls + 0.12, 0.3)
        cx = bx * ca + 15.0 * math.sin(8 * s + ph)
        cy = by * cb + 12.0 * math.cos(6 * s + ph)
        sl.paint(30.0, cx, cy, r * 1.6 * scale, r * 1.3 * scale, within=cavity)
        sl.paint(BOWEL_GAS, cx, cy, r * 0.6 * scale, r * 0.5 * scale, within=cavity)
    # Lung bases from the liver dome upwards.
    lung = min(1.0, max(0.0, (s - le + 0.06) / 0.3)) ** 0.6
    for side in (-1.0, 1.0):
        sl.paint(LUNG, side * 0.5 * ca, 0.2 * cb, 0.45 * ca * lung, 0.75 * cb * lung, within=cavity)
    for side in (-1.0, 1.0):
        sl.paint(50.0, side * 0.2 * a, 0.78 * b, 0.17 * a, 0.16 * b)
    kid = _profile(s, ls - 0.14, ls + 0.16)
    for side in (-1.0, 1.0):
        sl.paint(an.kidney_hu, side * 0.38 * ca, 0.45 * cb, 28.0 * kid, 40.0 * kid, within=cavity)
        sl.paint(VISCERAL_FAT + 60, side * 0.30 * ca, 0.42 * cb, 8.0 * kid, 12.0 * kid, within=cavity)
    spl = _profile(s, ls + 0.06, le - 0.02)
    sl.paint(
        an.spleen_hu, 0.62 * ca, 0.25 * cb, 34.0 * spl, 52.0 * spl, within=cavity, wobble=((3, 0.08, 1.0),)
    )
    sto = _profile(s, ls + 0.1, le + 0.02)
    sl.paint(an.stomach_hu, 0.32 * ca, -0.35 * cb, 48.0 * sto, 36.0 * sto, within=cavity)
    sl.paint(BOWEL_GAS, 0.32 * ca, -0.55 * cb, 30.0 * sto, 12.0 * sto, within=cavity)
    sl.paint(42.0, 0.08 * ca, 0.55 * cb, 11.0, 11.0, within=cavity)  # aorta
    ivc = _profile(s, 0.05, le + 0.05, 0.2)
    sl.paint(40.0, -0.14 * ca, 0.48 * cb, 10.0 * ivc, 9.0 * ivc, within=cavity)


def _paint_lobe(
    sl: _Slice, an: _Anatomy, body: _Body, shape: tuple[float, float, float, float, float], wobble: tuple
) -> None:
    """One liver lobe: `shape` = (centre x, centre y, radius x, radius y) as fractions of the cavity, and
    the lobe's size at this height."""
    kx, ky, krx, kry, size = shape
    sx, sy = an.liver_scale
    ox, oy = an.liver_shift
    ca, cb = body.ca, body.cb
    sl.paint(
        an.liver_hu, kx * ca + ox, ky * cb + oy, krx * ca * sx * size, kry * cb * sy * size,
        within=body.cavity, liver=True, wobble=wobble,
    )


def _paint_liver(sl: _Slice, s: float, an: _Anatomy, body: _Body, height_mm: float) -> None:
    """A right lobe and a left lobe with lobed outlines that turn slowly with height, and darker lesions."""
    ls, le = an.liver_start, an.liver_end
    p = (s - ls) / (le - ls)
    if not 0.0 < p < 1.0:
        return
    size = math.sin(math.pi * p) ** 0.7 * (0.55 + 0.45 * p)  # largest towards the dome
    ph = an.liver_phases
    right = ((2, 0.07, ph[0] + 2.0 * s), (3, 0.06, ph[1] - 3.0 * s), (5, 0.03, ph[2] + 5.0 * s))
    _paint_lobe(sl, an, body, (-0.42, -0.02, 0.55, 0.68, size), right)
    left = ((2, 0.08, ph[3] + 3.0 * s), (4, 0.05, ph[4] - 4.0 * s))
    _paint_lobe(sl, an, body, (0.02, -0.42, 0.38, 0.26, _profile(p, 0.3, 1.05, 0.7)), left)
    ox, oy = an.liver_shift
    for lx, ly, lp, r, contrast in an.lesions:  # darker spheres inside the liver, still liver
        dz_mm = (p - lp) * (le - ls) * height_mm
        if abs(dz_mm) < r:
            rr = math.sqrt(r * r - dz_mm * dz_mm)
            found = sl.region(-0.42 * body.ca + ox + lx, oy + ly, rr, rr)
            if found is not None:
                box, mask = found
                sl.hu[box][mask & sl.liver[box]] = an.liver_hu - contrast


def _paint_bone(sl: _Slice, s: float, an: _Anatomy, body: _Body) -> None:
    """Bone on top: the spine (cortex, body, posterior arch) and ribs around the wall."""
    a, b = body.a, body.b
    sl.paint(700.0, 0.0, 0.62 * b, 20.0, 18.0)
    sl.paint(250.0, 0.0, 0.62 * b, 16.0, 14.0)
    sl.paint(600.0, 0.0, 0.62 * b + 30.0, 8.0, 14.0)
    if s > an.liver_start - 0.08:
        ra, rb = a - an.subq - an.wall / 2, b - an.subq - an.wall / 2
        for k, phase in enumerate(an.rib_phases):
            if math.cos(2 * math.pi * 5.0 * s + phase) < 0.2:
                continue
            theta = -math.pi * (0.1 + 0.8 * k / (len(an.rib_phases) - 1)) + 0.15 * math.sin(3 * s + phase)
            for side in (-1.0, 1.0):
                sl.paint(650.0, side * ra * math.cos(theta), -rb * math.sin(theta) * 0.9, 6.0, 4.5)


def render_case(
    seed: int, case_number: int, size: int, slices: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one phantom case.

    Returns `volume` int16 (size, size, slices) in HU, `label` uint8 (size, size, slices) with 1 = liver,
    and the 4x4 voxel-to-world `affine` (mm).
    """
    rng = np.random.default_rng([seed, case_number])
    an = _draw_anatomy(rng)
    spacing = an.fov_mm / size
    coords = (np.arange(size, dtype=np.float32) - (size - 1) / 2.0) * spacing
    volume = np.empty((size, size, slices), dtype=np.float32, order="F")  # NIfTI order: no copy to save
    label = np.zeros((size, size, slices), dtype=np.uint8, order="F")
    for z in range(slices):
        sl = _Slice(coords, coords)
        _paint_slice(sl, z / max(slices - 1, 1), an, (slices - 1) * an.slice_mm)
        volume[:, :, z] = sl.hu
        label[:, :, z] = sl.liver
    noise = rng.standard_normal(volume.shape, dtype=np.float32)
    volume += noise * np.float32(NOISE_HU)
    np.rint(volume, out=volume)
    np.clip(volume, -1024, 3071, out=volume)
    # Like most scanners, pixels outside the reconstructed circle hold a constant padding value.
    outside = (coords[:, None] ** 2 + coords[None, :] ** 2) > (size * spacing / 2.0) ** 2
    volume[outside] = OUTSIDE_FOV
    affine = np.array(
        [
            [-spacing, 0.0, 0.0, (size - 1) / 2.0 * spacing],
            [0.0, -spacing, 0.0, (size - 1) / 2.0 * spacing],
            [0.0, 0.0, an.slice_mm, -(slices - 1) * an.slice_mm / 2.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    return volume.astype(np.int16), label, affine

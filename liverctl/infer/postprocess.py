"""3D clean-up of binary liver masks: connected components (cc3d) and hole filling (scipy).

A post-processing spec is a `+`-joined chain of registered steps, applied left to right:

| step         | does                                                                  |
|--------------|-----------------------------------------------------------------------|
| `none`       | nothing                                                               |
| `largest`    | keep the largest 26-connected component                               |
| `min-size:N` | drop 26-connected components of fewer than N voxels (an N above a     |
|              | volume's voxel count would empty its mask: refused, `check_volume`)   |
| `fill`       | fill holes in 3D (as `scipy.ndimage.binary_fill_holes`, via cc3d)     |
| `fill2d`     | fill holes slice by slice (along the last axis)                       |

e.g. `largest`, `min-size:5000+fill2d`. `auto` is not a step: `AutoSelector` scores candidate specs on
validation cases by volume Dice and keeps `none` unless a clean-up raises it (as nnU-Net decides).

The same code serves `liverctl postprocess IN OUT` on NIfTI files or folders (`postprocess_nifti`),
which keeps each file's header and affine.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from liverctl.data.nifti import BROKEN_LINK, is_nifti_name, is_pair_name, pair_header, pair_partner
from liverctl.data.sources.common import nifti_files
from liverctl.disk import is_disk_full, no_space_error
from liverctl.errors import LiverctlError
from liverctl.files import atomic_path, check_output_file, check_output_folder, staged_folder
from liverctl.metrics import DiceCounts
from liverctl.plural import agree, plural
from liverctl.printable import quoted
from liverctl.suggest import did_you_mean

CONNECTIVITY = 26
AUTO = "auto"
# What `auto` compares; `none` first so that ties keep the prediction untouched.
AUTO_CANDIDATES = ("none", "largest", "fill2d", "largest+fill2d", "largest+fill")


# `component_sizes` counts this many voxels at a time: np.bincount(labels.ravel()) of a NIfTI's mask first made a
# C-ordered copy of its Fortran-ordered labels, then an int64 copy of that (a 512 x 512 x 900 volume: 2.4 GB more).
_SIZES_CHUNK = 1 << 22


def component_sizes(labels: np.ndarray, n: int) -> np.ndarray:
    """Voxels of each label 0 .. n (0: the background), counted a few MB of voxels at a time.
    Shape: labels (X, Y, Z) integer -> (n + 1,) int64."""
    flat = labels.ravel(order="K")  # a view in the labels' own memory order (cc3d keeps a NIfTI's Fortran order)
    sizes = np.zeros(n + 1, dtype=np.int64)
    for start in range(0, flat.size, _SIZES_CHUNK):
        sizes += np.bincount(flat[start:start + _SIZES_CHUNK], minlength=n + 1)
    return sizes


def keep_largest(mask: np.ndarray) -> np.ndarray:
    """Largest 26-connected component. Shape: (X, Y, Z) bool -> same; empty stays empty."""
    import cc3d

    labels, n = cc3d.connected_components(mask.astype(np.uint8, copy=False), connectivity=CONNECTIVITY, return_N=True)
    if n <= 1:
        return mask.astype(bool, copy=True)
    sizes = component_sizes(labels, n)
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def drop_small(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """Remove 26-connected components smaller than `min_voxels`. Shape: (X, Y, Z) bool -> same."""
    import cc3d

    labels, n = cc3d.connected_components(mask.astype(np.uint8, copy=False), connectivity=CONNECTIVITY, return_N=True)
    sizes = component_sizes(labels, n)
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels]


def _touching_border(labels: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """Label ids present on the first or last plane along each of `axes`."""
    faces = [np.take(labels, i, axis=ax).ravel() for ax in axes for i in (0, -1)]
    return np.unique(np.concatenate(faces))


def _keep_all_but(labels: np.ndarray, n: int, outside: np.ndarray) -> np.ndarray:
    """Foreground (label 0) plus every background component not in `outside`."""
    keep = np.ones(n + 1, dtype=bool)
    keep[outside] = False
    keep[0] = True
    return keep[labels]


def fill_holes_3d(mask: np.ndarray) -> np.ndarray:
    """Fill background pockets that do not reach the volume's border (6-connected background), as
    `scipy.ndimage.binary_fill_holes` does, with cc3d (about 7x faster). Shape: (X, Y, Z) -> same."""
    import cc3d

    background = np.ascontiguousarray(~mask).view(np.uint8)
    labels, n = cc3d.connected_components(background, connectivity=6, return_N=True)
    return _keep_all_but(labels, n, _touching_border(labels, (0, 1, 2)))


def fill_holes_2d(mask: np.ndarray) -> np.ndarray:
    """Fill holes in each slice `mask[..., z]` on its own (4-connected background within the slice),
    as `binary_fill_holes` per slice does, in one labelling pass. Shape: (X, Y, Z) -> same."""
    from scipy import ndimage

    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[:, :, 1] = ndimage.generate_binary_structure(2, 1)  # no links between slices
    labels, n = ndimage.label(~mask, structure=structure)
    return _keep_all_but(labels, n, _touching_border(labels, (0, 1)))


def _no_arg(name: str, fn: Callable[[np.ndarray], np.ndarray]):
    def build(arg: str | None) -> Callable[[np.ndarray], np.ndarray]:
        if arg is not None:
            raise LiverctlError(f"post-processing step {name!r} takes no argument (got {quoted(f'{name}:{arg}')})")
        return fn

    return build


# More voxels than any array holds (numpy counts them in an int64): a min-size at or beyond it is no voxel count.
MIN_SIZE_LIMIT = 2**63


def _min_size(arg: str | None) -> Callable[[np.ndarray], np.ndarray]:
    # ASCII digits only ('²' is a digit to str.isdigit, not to int) and at most 19 of them (int() refuses 4300)
    if arg is None or not (arg.isascii() and arg.isdigit()) or len(arg) > 19 or not 1 <= int(arg) < MIN_SIZE_LIMIT:
        raise LiverctlError(f"post-processing step 'min-size' needs a positive voxel count below 2^63, e.g. "
                            f"min-size:5000 (got {quoted(arg, 40)})")
    n = int(arg)
    return lambda mask: drop_small(mask, n)


# name -> builder(argument after ':' or None) -> mask function
STEPS: dict[str, Callable[[str | None], Callable[[np.ndarray], np.ndarray]]] = {
    "none": _no_arg("none", lambda m: m),
    "largest": _no_arg("largest", keep_largest),
    "min-size": _min_size,
    "fill": _no_arg("fill", fill_holes_3d),
    "fill2d": _no_arg("fill2d", fill_holes_2d),
}


@dataclass(frozen=True)
class Postprocess:
    """A parsed spec; call it on an (X, Y, Z) mask to get the cleaned bool mask."""

    spec: str
    steps: tuple[Callable[[np.ndarray], np.ndarray], ...] = field(compare=False, repr=False)
    min_size: int = 0  # the largest N of its min-size:N steps; 0 without one

    def check_volume(self, voxels: int, what: str, path: str | os.PathLike | None = None) -> None:
        """LiverctlError (naming `what`, e.g. "test case '6'", and `path`) when a min-size step asks for more voxels
        than the whole volume has (`voxels`): it drops every component, so the mask is empty whatever it holds (a
        user's min-size:50000000, a zero too many, emptied every mask of a 512 x 512 x 150 store without a word).
        A spec is anyone's (--postprocess, post.mode, experiment.json): checked where it meets its volumes."""
        if self.min_size > voxels:
            raise LiverctlError(
                f"post-processing {quoted(self.spec, 60)} drops components of fewer than {self.min_size:,} voxels, more "
                f"than the whole volume of {what} holds ({voxels:,}): its mask would be empty whatever it holds; "
                "give a smaller min-size",
                path=path,
            )

    def __call__(self, mask: np.ndarray) -> np.ndarray:
        out = np.asarray(mask).astype(bool, copy=False)
        for step in self.steps:
            out = step(out)
        return out.astype(bool, copy=False)

    @property
    def is_identity(self) -> bool:
        return all(part == "none" for part in self.spec.split("+"))


def parse_postprocess(spec: str) -> Postprocess:
    """`"largest+fill2d"` -> Postprocess. Unknown steps fail with the valid names and the nearest one.

    `auto` is rejected here: resolve it first with `AutoSelector`.
    """
    spec = spec.strip().lower()
    if spec == AUTO:
        raise LiverctlError("'auto' must be resolved on validation cases before it can be applied")
    steps, min_size = [], 0
    for part in spec.split("+"):
        name, _, arg = part.strip().partition(":")
        if not name:
            raise LiverctlError(f"post-processing {quoted(spec)} has an empty step; join steps with one '+', e.g. largest+fill")
        if name not in STEPS:
            near = did_you_mean(name, [*STEPS, AUTO])
            hint = f" ({near})" if near else ""
            raise LiverctlError(
                f"unknown post-processing {quoted(part)}{hint}; valid: none, largest, min-size:N, fill, fill2d, "
                "auto, or steps joined by '+' (e.g. largest+fill2d)"
            )
        steps.append(STEPS[name](arg or None))
        if name == "min-size":  # its argument checked by the step's builder
            min_size = max(min_size, int(arg))
    return Postprocess(spec=spec, steps=tuple(steps), min_size=min_size)


def check_spec(spec: str) -> str:
    """Validate a spec that may be `auto`; returns it normalised."""
    spec = spec.strip().lower()
    if spec != AUTO:
        parse_postprocess(spec)
    return spec


# ----------------------------------------------------------------------------------------------- auto


@dataclass
class AutoChoice:
    spec: str
    scores: dict[str, float]  # candidate spec -> volume Dice over the validation cases
    cases: int

    def describe(self) -> str:
        table = ", ".join(f"{s} {d:.4f}" for s, d in self.scores.items())
        return f"post-processing auto -> {self.spec} (volume Dice on {plural(self.cases, 'validation case')}: {table})"


@dataclass
class AutoSelector:
    """Scores candidate specs on (prediction, label) pairs streamed case by case; picks the best.

    A candidate replaces `none` only if it raises the volume Dice by more than `min_gain`.
    """

    candidates: Sequence[str] = AUTO_CANDIDATES
    min_gain: float = 1e-4
    _counts: dict[str, DiceCounts] = field(default_factory=dict)
    _parsed: dict[str, Postprocess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "none" not in self.candidates:
            self.candidates = ("none", *self.candidates)
        self._parsed = {c: parse_postprocess(c) for c in self.candidates}
        self._counts = {c: DiceCounts() for c in self.candidates}

    def add_case(self, case_id: str, pred: np.ndarray, label: np.ndarray) -> None:
        """Shape: pred, label (X, Y, Z) bool."""
        label = np.asarray(label, dtype=bool)
        for spec, post in self._parsed.items():
            self._counts[spec].add_volume(case_id, post(pred), label)

    def choose(self) -> AutoChoice:
        scores = {spec: counts.volume_dice() for spec, counts in self._counts.items()}
        n_cases = len(self._counts["none"].per_case)
        if n_cases == 0:
            raise LiverctlError("post-processing auto needs validation cases, and there are none")
        best = "none"
        for spec, score in scores.items():
            if score > scores[best] + self.min_gain:
                best = spec
        return AutoChoice(spec=best, scores=scores, cases=n_cases)


def choose_postprocess(
    cases: Iterable[tuple[str, np.ndarray, np.ndarray]], candidates: Sequence[str] = AUTO_CANDIDATES
) -> AutoChoice:
    """(case id, prediction, label) triples -> the spec with the best volume Dice (`none` on ties)."""
    selector = AutoSelector(candidates=tuple(candidates))
    for case_id, pred, label in cases:
        selector.add_case(case_id, pred, label)
    return selector.choose()


# ---------------------------------------------------------------------------------------------- NIfTI

def is_nifti(path: Path) -> bool:
    """A NIfTI file name, or either half of an Analyze / NIfTI pair (NAME.hdr + NAME.img)."""
    return is_nifti_name(path.name) or is_pair_name(path.name)


def _as_header(path: Path) -> Path:
    """A pair named by its NAME.img is the pair of its NAME.hdr: the output that is the input is either."""
    return pair_header(path) if is_pair_name(path.name) else path


@dataclass
class FileResult:
    source: Path
    target: Path
    voxels_before: int
    voxels_after: int
    note: str | None = None  # a mask holding none of the liver labels given (`liver_mask.no_liver_note`)


def postprocess_nifti(
    source: str | os.PathLike,
    target: str | os.PathLike,
    spec: str,
    *,
    liver_labels: Sequence[int] | None = None,
    in_place: bool = False,
) -> list[FileResult]:
    """Clean NIfTI mask file(s): a file -> a file (or into a folder), a folder -> a folder of the same names.

    The mask is `label > 0`, or `label in liver_labels` when given, by ingest's rule (`liverctl.data.liver_mask`:
    whole-number values; a file with values far from them is refused). The output holds 0/1 in the input's
    own data type with the input's header and affine, written atomically (temp file + rename); a folder's
    masks move into the output folder together once every file is done (`files.staged_folder`), so a
    command killed midway leaves that folder as it was. An output that is the input (the same file, or the
    same folder) is refused unless `in_place`.
    """
    post = parse_postprocess(spec)
    pairs = _file_pairs(source, target, in_place)
    # a place that cannot be written (a read-only /kaggle/input) refused before any file is read, saying where to go
    if len(pairs) == 1:
        check_output_file(pairs[0][1], what="the cleaned mask", option="TARGET",
                          folder_hint="TARGET takes the cleaned mask's file name, or the folder to write it in")
        return [_write_cleaned(*_clean_file(pairs[0][0], post, liver_labels), pairs[0])]
    check_output_folder(target, what="the cleaned masks", option="TARGET")
    results, failures = [], []
    with staged_folder(target) as staged:  # the cleaned masks appear together at the end: a kill leaves none
        for source_file, out in pairs:
            try:
                cleaned = _clean_file(source_file, post, liver_labels)
            except LiverctlError as exc:  # this file cannot be read or cleaned: the others still are (writes stop all)
                failures.append(str(exc))
                continue
            result = _write_cleaned(*cleaned, (source_file, staged / out.name))
            results.append(replace(result, target=out))
    if failures:
        raise FilesNotCleaned(Path(source), results, failures)
    return results


class FilesNotCleaned(LiverctlError):
    """Some files of a folder could not be read (or cleaned as asked: `Postprocess.check_volume`), so were not
    cleaned; every other file was. `results`: the files cleaned; `failures`: one line per file left alone."""

    def __init__(self, folder: Path, results: list[FileResult], failures: list[str]):
        self.results, self.failures = results, failures
        total = len(results) + len(failures)
        failed, cleaned = len(failures), len(results)
        super().__init__(f"{failed} of {plural(total, 'file')} {agree(failed, 'was', 'were')} not cleaned (above); "
                         f"the other {cleaned} {agree(cleaned, 'was', 'were')}", path=folder)


def _file_pairs(source: str | os.PathLike, target: str | os.PathLike, in_place: bool) -> list[tuple[Path, Path]]:
    """(input, output) NIfTI paths: a file -> a file (or into a folder), a folder -> a folder."""
    source, target = Path(source), Path(target)
    if source.is_dir():
        files = nifti_files(source, pairs=True)  # ingest's rule: macOS `._x.nii.gz` left out, CT.NII.GZ kept
        if not files:
            raise LiverctlError("no .nii / .nii.gz / .hdr+.img files in this folder", path=source)
        if (target.exists() and not target.is_dir()) or (not target.exists() and is_nifti(target)):
            raise LiverctlError("input is a folder, so the output must be a folder too", path=target)
        _refuse_overwrite(target, source, in_place, "output folder is the input folder; choose another to keep "
                          "the originals, or pass --in-place to overwrite them")
        return [(f, target / f.name) for f in files]
    if source.is_file():
        if not is_nifti(source):
            raise LiverctlError("not a NIfTI file (.nii, .nii.gz, or a .hdr/.img pair)", path=source)
        out = target / source.name if target.is_dir() else target
        if not is_nifti(out):
            raise LiverctlError("output file must end in .nii, .nii.gz, .hdr or .img", path=out)
        _refuse_overwrite(_as_header(out), _as_header(source), in_place, "output is the input file; choose another "
                          "output to keep the original, or pass --in-place to overwrite it")
        return [(source, out)]
    if source.is_symlink():
        raise LiverctlError(BROKEN_LINK, path=source)
    raise LiverctlError("no such file or folder", path=source)


def _refuse_overwrite(out: Path, source: Path, in_place: bool, message: str) -> None:
    """Fail with `message` when `out` is `source` itself, unless `in_place`."""
    if _same_path(out, source) and not in_place:
        raise LiverctlError(message, path=out)


def _same_path(a: Path, b: Path) -> bool:
    """Whether `a` and `b` name the same file or folder (through links and `..` too)."""
    try:
        return a.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _clean_file(source: Path, post: Postprocess, liver_labels: Sequence[int] | None):
    """(the source image, its mask, the cleaned mask, a note on it or None); LiverctlError naming `source` when it
    cannot be read."""
    from liverctl.data.liver_mask import no_liver_note, read_liver_mask
    from liverctl.data.nifti import finite_affine

    img, mask = read_liver_mask(source, liver_labels)  # ingest's rule; the header checked before any voxel is read
    finite_affine(img, source)  # the cleaned mask is saved with this affine: nibabel cannot save a NaN one
    post.check_volume(mask.size, "the file", source)
    # --liver-labels 2 on a 0/1 mask wrote an empty mask, '0 -> 0 voxels', without a word
    note = no_liver_note(source, liver_labels, "written as an empty mask") if liver_labels and not mask.any() else None
    return img, mask, post(mask), note


def _write_cleaned(img, mask: np.ndarray, cleaned: np.ndarray, note: str | None,
                   pair: tuple[Path, Path]) -> FileResult:
    header = img.header.copy()
    # nibabel resets the scaling of a new image, so 0/1 are stored as is, in the input's data type; a mask read as
    # (X, Y, Z) from an (X, Y, Z, 1) file goes back in the file's own shape (its header's dim).
    voxels = cleaned.astype(img.get_data_dtype()).reshape(img.shape)
    out = type(img)(voxels, img.affine, header=header)
    write_nifti_atomic(out, pair[1])
    return FileResult(pair[0], pair[1], int(mask.sum()), int(cleaned.sum()), note)


def write_nifti_atomic(img, target: Path, what: str = "the mask") -> None:
    """Save a nibabel image atomically (`liverctl.files.atomic_path`: a temporary name beside `target`,
    fsync, rename, fsync of the folder), creating `target`'s folder first."""
    import nibabel as nib

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in target.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise LiverctlError(f"cannot write here: {blocker} is a file, not a folder", path=target) from None
        if is_disk_full(exc):
            raise no_space_error(target, what) from None
        raise LiverctlError(f"cannot write here ({exc.strerror or exc})", path=target) from None
    if is_pair_name(target.name):  # NAME.img (and .mat) renamed into place first, then the NAME.hdr
        target = pair_header(target)
        mat = target.with_suffix(".MAT" if target.suffix.isupper() else ".mat")
        with contextlib.ExitStack() as renames:
            tmp = renames.enter_context(atomic_path(target, what=what))
            renames.enter_context(atomic_path(pair_partner(target), what=what))
            nib.save(img, str(tmp))  # writes `.<pid>.tmp.NAME.hdr` and `.img` (the temporary names match)
            if tmp.with_suffix(mat.suffix).exists():  # SPM's Analyze keeps its affine in NAME.mat too
                renames.enter_context(atomic_path(mat, what=what))
        return
    with atomic_path(target, what=what) as tmp:
        nib.save(img, str(tmp))

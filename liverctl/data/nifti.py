"""Opening NIfTI files from strangers: the header is checked before a single voxel is read.

A NIfTI header is 348 bytes anyone can write. Trusted, a 77-byte `.nii.gz` claiming 2048 x 2048 x 256
voxels makes a reader allocate gigabytes before it finds out the data is not there. So every reader of
NIfTI in liverctl (ingest, postprocess, evaluate, bench) goes through `open_nifti` / `read_nifti`, which
refuse, with one line naming the file and before any allocation, a header whose

- dimensions are not all positive, or that is not 3D (a 4D or 5D file whose extra axes are all 1 is 3D);
- voxel type is not integer or float;
- voxel bytes cannot be in the file: an uncompressed file must hold them, a gzip file cannot expand
  beyond what deflate can do (`GZIP_MAX_RATIO`);
- voxel array, as it will be in memory, does not fit the share of the machine's memory that one worker
  gets (`memory_budget`).

The voxels are then read in one pass over the file (`_read_voxels`) that keeps only their bytes, grows its
buffer as the data comes (a truncated file costs what it holds, not what its header claims) and lets zlib
check every gzip member's CRC.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.disk import human_bytes
from liverctl.errors import LiverctlError
from liverctl.printable import MESSAGE_LIMIT, first_line, one_line, quoted

# Deflate cannot expand by more than 1032:1 (a 258-byte match costs at least 2 bits), so a gzip file of
# N bytes never holds more than about 1032 N bytes; the margin covers the gzip header and trailer.
GZIP_MAX_RATIO = 1100
# Share of one worker's memory the voxel array itself may take: the readers hold a converted copy beside
# it (ingest: float16 image and uint8 mask; postprocess: the mask and its cleaned copy).
ARRAY_SHARE = 0.5
SUFFIXES = (".nii.gz", ".nii")  # compared case-insensitively: CT.NII.GZ is as much NIfTI as ct.nii.gz
# An Analyze 7.5 / NIfTI pair: the header in NAME.hdr, the voxels in NAME.img (the same case: X.HDR, X.IMG).
# evaluate and postprocess read them (`open_nifti(..., pairs=True)`); ingest does not, its resume records one
# file's size, mtime and sha256 per image.
PAIR_SUFFIXES = (".hdr", ".img")
BROKEN_LINK = "a link that leads to no file (a loop, or its target is gone: a git-annex or DataLad file not fetched?)"


def is_nifti_name(name: str) -> bool:
    """Whether a file name says NIfTI (.nii or .nii.gz, in any case)."""
    return name.lower().endswith(SUFFIXES)


def is_pair_name(name: str) -> bool:
    """Whether a file name says one half of an Analyze / NIfTI pair (.hdr or .img, in any case)."""
    return name.lower().endswith(PAIR_SUFFIXES)


def pair_partner(path: Path) -> Path:
    """The other half of a pair: NAME.img for NAME.hdr and back, in the suffix's own case (X.HDR -> X.IMG)."""
    suffix = path.suffix
    other = {".hdr": ".img", ".img": ".hdr"}[suffix.lower()]
    return path.with_suffix(other.upper() if suffix.isupper() else other)


def pair_header(path: Path) -> Path:
    """NAME.hdr of a pair named by either half."""
    return path if path.suffix.lower() == ".hdr" else pair_partner(path)


def check_pair(path: Path) -> Path:
    """The header of the pair `path` names (NAME.hdr or NAME.img); LiverctlError naming the file when its other
    half is missing: a header without its voxels, or voxels without the header that says what they are."""
    if not path.exists():
        raise LiverctlError(BROKEN_LINK if path.is_symlink() else "no such file", path=path)
    header = pair_header(path)
    for half, missing, what in ((header, pair_partner(header), "an Analyze header without its voxel file"),
                                (pair_partner(header), header, "an Analyze voxel file without its header")):
        if half.exists() and not missing.exists():
            why = BROKEN_LINK if missing.is_symlink() else "missing"
            raise LiverctlError(f"{what}: {missing.name} is {why}", path=half)
    return header


def voxel_file(img, path: Path) -> Path:
    """The file holding an opened image's voxels: `path` itself, or NAME.img of a pair."""
    image = getattr(img, "file_map", {}).get("image")
    return Path(image.filename) if image is not None and image.filename else path


def is_gzip_name(name: str) -> bool:
    return name.lower().endswith(".gz")


def machine_memory() -> int:
    """Bytes of memory this process may use: the physical memory, or the container's limit if lower."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not Linux / not POSIX
        total = _meminfo_total() or 8 << 30
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # "max" means no limit
            total = min(total, int(text))
    return total


def _meminfo_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_budget(workers: int = 1) -> int:
    """Bytes one voxel array may take in memory when `workers` processes read files at the same time."""
    return int(machine_memory() * ARRAY_SHARE) // max(1, workers)


def _shape_text(shape: tuple[int, ...]) -> str:
    return " x ".join(str(n) for n in shape)


class _Caught(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _header_fixes(into: list[str] | None) -> Iterator[None]:
    """What nibabel says of a header it fixes while loading (`pixdim[1,2,3] should be non-zero; setting 0 dims
    to 1`), caught into `into` (None: dropped) instead of printed to stderr without the file's name."""
    from nibabel import imageglobals

    logger, caught = imageglobals.logger, _Caught()
    saved = logger.handlers[:]
    logger.handlers[:] = [caught]
    try:
        yield
    finally:
        logger.handlers[:] = saved
        if into is not None:
            into.extend(caught.messages)


def _read_hint(path: Path, suffix: str) -> str:
    """What a file's first bytes say where nibabel could not read it: compressed otherwise than its suffix says
    (nibabel goes by the name alone: what to rename it to), a Git LFS or git-annex pointer in place of the
    image (what to fetch), or a NIfTI-1 header whose dim[0] is out of range (nibabel then takes it for the
    other byte order and complains of whatever that makes of it, e.g. 'vox offset 0 too low')."""
    import gzip

    head = header = b""
    try:
        with open(path, "rb") as f:
            head = header = f.read(348)
        if head[:2] == b"\x1f\x8b":
            header = b""
            with gzip.open(path, "rb") as f:
                header = f.read(348)
    except (OSError, EOFError, ValueError):  # unreadable, or a gzip too broken to show its header
        pass
    if head.startswith(b"version https://git-lfs"):
        return "; it is a Git LFS pointer, not the image: fetch the file (git lfs pull)"
    if b"/annex/objects/" in head[:200] and len(head) < 348:
        return "; it is a git-annex pointer, not the image: fetch the file (git annex get, or datalad get)"
    if head[:2] == b"\x1f\x8b" and suffix.lower() == ".nii":
        return f"; it is gzip-compressed: rename it to end in {suffix}.gz"
    sizeof_hdr = struct.unpack("<i", head[:4]) + struct.unpack(">i", head[:4]) if len(head) >= 4 else ()
    if {348, 540} & set(sizeof_hdr) and suffix.lower() == ".nii.gz":  # a NIfTI-1 or NIfTI-2 header, uncompressed
        return f"; it is an uncompressed NIfTI: rename it to end in {suffix[:-3]}"
    for order in "<>":
        if len(header) == 348 and struct.unpack_from(f"{order}i", header)[0] == 348:
            ndim = struct.unpack_from(f"{order}h", header, 40)[0]
            if not 1 <= ndim <= 7:
                return f"; its header's dim[0] (the number of axes) is {ndim}, where NIfTI allows 1 to 7: the header is damaged"
    return ""


def open_nifti(path: str | os.PathLike, *, workers: int = 1, header_fixes: list[str] | None = None,
               pairs: bool = False):
    """Open a NIfTI file and check its header; reads no voxel data.

    Returns the nibabel image (its `dataobj` still on disk). Raises `LiverctlError` naming the file for
    anything that is not a NIfTI image or whose header fails a check in the module docstring.
    `workers`: how many processes read files at the same time (each gets that share of the memory).
    `header_fixes`: gets what nibabel fixed in the header as it loaded it (e.g. a zero voxel size set to 1).
    `pairs`: an Analyze 7.5 or NIfTI pair (NAME.hdr + NAME.img, named by either) is read too (`check_pair`).
    """
    import nibabel as nib

    path = Path(path)
    if pairs and is_pair_name(path.name):
        return _open_pair(check_pair(path), workers=workers, header_fixes=header_fixes)
    if not is_nifti_name(path.name):
        raise LiverctlError("not a NIfTI file name (.nii, .nii.gz" + (", .hdr/.img)" if pairs else ")"), path=path)
    suffix = path.name[-len(next(s for s in SUFFIXES if path.name.lower().endswith(s))) :]
    if suffix not in (suffix.lower(), suffix.upper()):  # nibabel looks for `x.nii.Gz` when given `x.Nii.Gz`
        raise LiverctlError(
            f"nibabel cannot open a file whose suffix mixes cases ({quoted(suffix)}); rename it to end in {quoted(suffix.lower())}",
            path=path,
        )
    if not path.exists():  # nibabel's "No such file or no access" hides a link to nowhere
        raise LiverctlError(BROKEN_LINK if path.is_symlink() else "no such file", path=path)
    _check_opens(path)  # nibabel's "Cannot work out file type" hides a file this user may not read, or a folder
    try:
        with _header_fixes(header_fixes):
            img = nib.load(str(path))
    except Exception as exc:  # nibabel, gzip and zlib raise many types for files that are not NIfTI
        hint = _read_hint(path, suffix)
        raise LiverctlError(f"cannot be read as NIfTI ({short_error(exc, path)}){hint}", path=path) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise LiverctlError(f"is a {type(img).__name__}, not a NIfTI image", path=path)
    check_header(img, path, workers=workers)
    return img


def _check_opens(path: Path) -> None:
    """One line naming `path` where it cannot be opened for reading (no permission, a folder...)."""
    try:
        open(path, "rb").close()
    except OSError as exc:
        raise LiverctlError(f"cannot be opened ({exc.strerror or exc})", path=path) from None


def _open_pair(header: Path, *, workers: int, header_fixes: list[str] | None):
    """`open_nifti` of the pair whose header is `header` (its voxel file checked there by `check_pair`)."""
    import nibabel as nib

    for half in (header, pair_partner(header)):
        _check_opens(half)
    try:
        with _header_fixes(header_fixes):
            img = nib.load(str(header))
    except Exception as exc:
        raise LiverctlError(f"cannot be read as an Analyze or NIfTI pair ({short_error(exc, header)})",
                            path=header) from None
    if not isinstance(img, nib.AnalyzeImage):  # Nifti1Pair, Nifti2Pair and the SPM flavours are Analyze images
        raise LiverctlError(f"is a {type(img).__name__}, not an Analyze or NIfTI pair", path=header)
    check_header(img, header, workers=workers)
    return img


def volume_shape(img) -> tuple[int, int, int]:
    """The (X, Y, Z) shape of a checked image (trailing axes of length 1 dropped)."""
    shape = tuple(int(n) for n in img.header.get_data_shape())
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape  # type: ignore[return-value]


def volume_geometry(img, path: Path) -> tuple[list[list[float]], list[float]]:
    """(affine 4x4, voxel spacing (x, y, z)) of a checked image, as plain floats.

    Raises `LiverctlError` naming the file when either holds NaN or infinity: a damaged header places the
    voxels nowhere, and the store (JSON) has no such numbers. The affine is nibabel's: the sform where its
    code is set, else the qform, else one from pixdim.
    """
    affine, spacing = finite_affine(img, path), np.asarray(img.header.get_zooms()[:3], dtype=np.float64)
    if not np.isfinite(spacing).all():
        raise LiverctlError(
            f"header's voxel spacing holds NaN or infinity (pixdim {_shape_text(tuple(spacing.tolist()))}); "
            "the header is damaged: save the volume again with valid pixdim",
            path=path,
        )
    return affine.tolist(), spacing.tolist()


def finite_affine(img, path: Path) -> np.ndarray:
    """The affine of a checked image (nibabel's: the sform where its code is set, else the qform, else one
    from pixdim), float64 (4, 4); `LiverctlError` naming the file where it holds NaN or infinity (nibabel
    cannot even save such an image again: 'Could not decompose affine')."""
    header, affine = img.header, np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        codes = header.keys()  # an Analyze header has neither code: its affine is from pixdim
        source = ("sform" if "sform_code" in codes and header["sform_code"] > 0
                  else "qform" if "qform_code" in codes and header["qform_code"] > 0 else "pixdim")
        raise LiverctlError(
            f"header's affine ({source}) holds NaN or infinity; the header is damaged: save the volume again "
            "with a valid affine",
            path=path,
        )
    return affine


def axis_codes(affine) -> str | None:
    """Where an affine's voxel axes point ('RAS', 'LPS', ...); None for a singular affine, where an axis
    points nowhere (a header whose sform rows are zero). Shape: affine (4, 4)."""
    from nibabel.orientations import aff2axcodes

    try:
        codes = aff2axcodes(np.asarray(affine, dtype=np.float64))
    except ValueError:
        return None
    return None if None in codes else "".join(codes)


def grid_difference(affine: np.ndarray, other: np.ndarray, whose: str = "the volume's") -> str | None:
    """How `other` (a label's affine) places voxels differently from `affine` (its volume's, `whose`), in words;
    None where they agree (within 1e-3 mm, or 0.01 % of a voxel size). Shape: both (4, 4)."""
    affine, other = np.asarray(affine, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if not np.isfinite(other).all():
        return "holds NaN or infinity"
    if np.allclose(other, affine, rtol=1e-4, atol=1e-3):
        return None
    ours, theirs = axis_codes(affine), axis_codes(other)
    if theirs is None:
        return "is singular (an axis has no direction)"
    if ours is None:
        return f"orients the axes {theirs} where {whose} is singular (an axis has no direction)"
    if ours != theirs:
        return f"orients the axes {theirs} where {whose} are {ours}"
    zooms = np.sqrt((other[:3, :3] ** 2).sum(axis=0)), np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if not np.allclose(*zooms, rtol=1e-3):
        return f"has voxels of {_mm(zooms[0])} mm where {whose} are {_mm(zooms[1])} mm"
    shift = float(np.abs(other[:3, 3] - affine[:3, 3]).max())
    if shift <= 1e-3:  # the same origin and axis codes, yet other directions
        return f"turns or shears the axes otherwise than {whose} (same origin and axis codes)"
    return f"is shifted by {shift:.3g} mm from {whose}"


def qform_sform_difference(img) -> str | None:
    """How a header's qform places the voxels otherwise than its sform, in words (`grid_difference`), where both
    are set (codes > 0) and they disagree; None otherwise. nibabel (and so liverctl) reads by the sform; other
    tools may read by the qform (ITK-based ones have preferred it), so a mask made or viewed with one of them can
    lie flipped or shifted against its image: ingest says so (`liverctl.data.case_notes`)."""
    header = img.header
    if header["qform_code"] <= 0 or header["sform_code"] <= 0:
        return None
    try:
        qform, sform = header.get_qform(), header.get_sform()
    except Exception:  # a quaternion nibabel cannot turn into a matrix: the header is damaged
        return "cannot be turned into an affine"
    if not np.isfinite(sform).all():  # said by finite_affine, which refuses the file
        return None
    return grid_difference(sform, qform, "the sform's")


def _mm(zooms: np.ndarray) -> str:
    return " x ".join(f"{z:.3g}" for z in zooms.tolist())


def check_header(img, path: Path, *, workers: int = 1) -> None:
    """Refuse a header that cannot describe a volume this machine can read from this file."""
    shape = tuple(int(n) for n in img.header.get_data_shape())
    if not shape or min(shape) <= 0:
        raise LiverctlError(
            f"header claims shape ({_shape_text(shape)}); every dimension must be positive", path=path
        )
    dims = volume_shape(img)
    if len(dims) != 3:
        raise LiverctlError(
            f"is {len(dims)}D with shape {dims}; expected a 3D volume (x, y, slices)", path=path
        )
    dtype = np.dtype(img.get_data_dtype())
    if dtype.kind not in "biuf":
        raise LiverctlError(f"has voxels of type {dtype}, expected integers or floats", path=path)

    voxels = int(np.prod(shape, dtype=object))  # Python ints: 30000**3 * 8 must not wrap
    offset = int(getattr(img.dataobj, "offset", 0) or 0)
    claimed = offset + voxels * dtype.itemsize
    holder = voxel_file(img, path)  # a pair's NAME.img
    size = holder.stat().st_size
    what = f"{_shape_text(dims)} {dtype} voxels ({human_bytes(voxels * dtype.itemsize)})"
    if offset > voxels * dtype.itemsize:  # the voxels cannot be where the header puts them: say where that is
        what += f" at {human_bytes(offset)} into the file (its vox_offset)"
    if is_gzip_name(path.name):
        if claimed > size * GZIP_MAX_RATIO:
            raise LiverctlError(
                f"header claims {what}, more than a {human_bytes(size)} gzip file can hold "
                f"(at most {human_bytes(size * GZIP_MAX_RATIO)}); the file is truncated or the header is wrong",
                path=path,
            )
    elif claimed > size:
        raise LiverctlError(
            f"header claims {what} but the {'file' if holder == path else f'voxel file {holder.name}'} holds "
            f"{human_bytes(size)}; the file is truncated or the header is wrong",
            path=path,
        )

    in_memory = voxels * _loaded_itemsize(img, dtype)
    budget = memory_budget(workers)
    if in_memory > budget:
        per = f"each of {workers} workers" if workers > 1 else "one reader"
        hint = "; use fewer --workers" if workers > 1 else ""
        raise LiverctlError(
            f"header claims {_shape_text(dims)} {dtype} voxels ({human_bytes(in_memory)} in memory), more than "
            f"the {human_bytes(budget)} this machine ({human_bytes(machine_memory())}) allows {per}{hint}",
            path=path,
        )


def header_scaling(img) -> tuple[float, float]:
    """(scl_slope, scl_inter) the voxels of a nibabel image are read with: nibabel moves them into the data
    proxy on load and leaves the image's header without them (its get_slope_inter() is (None, None))."""
    slope, inter = getattr(img.dataobj, "slope", None), getattr(img.dataobj, "inter", None)
    return (1.0 if slope is None else float(slope)), (0.0 if inter is None else float(inter))


def _loaded_itemsize(img, dtype: np.dtype) -> int:
    """Bytes per voxel once read: nibabel returns float64 for data with a scale or offset."""
    scaled = header_scaling(img) != (1.0, 0.0)
    return max(dtype.itemsize, 8) if scaled else dtype.itemsize


def read_nifti(path: str | os.PathLike, *, workers: int = 1, pairs: bool = False) -> tuple[Any, np.ndarray]:
    """Open, check, then read a NIfTI volume (`_read_voxels`). Returns (image, voxels (X, Y, Z) with the
    file's scaling). `pairs`: as `open_nifti`'s (the voxels then come from NAME.img)."""
    path = Path(path)
    img = open_nifti(path, workers=workers, pairs=pairs)
    path = pair_header(path) if pairs and is_pair_name(path.name) else path
    return img, _voxels(img, path, lambda proxy: _read_voxels(proxy, voxel_file(img, path), None))


def read_nifti_and_sha256(
    path: str | os.PathLike, *, workers: int = 1, header_fixes: list[str] | None = None
) -> tuple[Any, np.ndarray, str]:
    """`read_nifti` plus the sha256 of the file, from one pass over its bytes (ingest records both)."""
    import hashlib

    path = Path(path)
    img = open_nifti(path, workers=workers, header_fixes=header_fixes)
    digest = hashlib.sha256()
    return img, _voxels(img, path, lambda proxy: _read_voxels(proxy, path, digest)), digest.hexdigest()


class _Reader:
    """A file read forward once, each piece also hashed into `digest` (None: not hashed)."""

    def __init__(self, file, digest):
        self.file, self.digest = file, digest

    def read(self, size: int) -> bytes:
        data = self.file.read(size)
        if self.digest is not None:
            self.digest.update(data)
        return data

    def drain(self) -> None:
        """Read (and hash) the rest of the file, a piece at a time, not held."""
        while self.read(1 << 20):
            pass

    def rest_is_zeros(self) -> bool:
        """Whether the rest of the file is zero bytes (read a piece at a time, not held)."""
        while piece := self.read(1 << 20):  # a read allocates all it asks for, even at the file's end
            if piece.strip(b"\x00"):
                return False
        return True


def _read_voxels(proxy, path: Path, digest) -> np.ndarray:
    """A checked image's voxels, read in one pass over the file that also hashes all of it into `digest`.

    Only the voxels' bytes are kept: a file far longer than its header's voxels (junk after them) costs no
    memory for the rest. A `.nii.gz` is inflated by zlib (no more than the voxels need plus 1 MB): about a
    third less CPU than nibabel's streamed read, and zlib checks each finished member's CRC, which nibabel's
    read, stopping where the voxels end, never reaches (a corrupt file read as good voxels). Voxels without
    scaling are a read-only view of the bytes, exactly what nibabel reads; scaled ones get nibabel's own
    arithmetic (`apply_read_scaling`).
    """
    from nibabel.volumeutils import apply_read_scaling

    count = int(np.prod(proxy.shape))
    dtype = np.dtype(proxy.dtype)
    needed = int(proxy.offset) + count * dtype.itemsize
    with open(path, "rb") as file:
        reader = _Reader(file, digest)
        data = _gunzip(reader, needed + (1 << 20)) if is_gzip_name(path.name) else reader.read(needed)
        if digest is not None:
            reader.drain()  # the hash is of the whole file
    if len(data) < needed:
        raise EOFError(f"the file ends {needed - len(data)} bytes before its voxel data does")
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=int(proxy.offset))
    if flat.flags.writeable:  # bytes give a read-only array already; keep both paths alike
        flat.flags.writeable = False
    voxels = flat.reshape(proxy.shape, order=getattr(proxy, "order", "F"))
    return apply_read_scaling(voxels, np.asanyarray(proxy.slope), np.asanyarray(proxy.inter))


_GZIP_MAGIC = b"\x1f\x8b"
# Input given to zlib at a time: 4 KB at a member's start, doubling while the member goes on. zlib copies
# the input left over when a member ends, so handing it all of the rest made a file of many small members take
# time growing with their count squared (160,000 empty members, 3.2 MB: 108 s).
_FIRST_CHUNK, _LAST_CHUNK = 1 << 12, 1 << 24


def _gunzip(reader: _Reader, limit: int) -> memoryview:
    """Inflate the gzip members read from `reader` until `limit` bytes are out (or the file ends), into one
    growing buffer (no second copy of the voxels to join parts, and no more memory than the data holds
    where the file is shorter than its header says); zlib checks each finished member's CRC. Returns a
    read-only view of the bytes inflated."""
    import zlib

    out, total = bytearray(), 0
    inflater, pending, chunk = zlib.decompressobj(31), b"", _FIRST_CHUNK
    while total < limit:
        if not pending:
            pending, chunk = reader.read(chunk), min(2 * chunk, _LAST_CHUNK)
            if not pending:
                break  # the file ends: after the last member, or in a truncated one (the caller counts the bytes)
        part = inflater.decompress(pending, limit - total)
        out += part
        total += len(part)
        if not inflater.eof:
            pending = inflater.unconsumed_tail  # input held back by the limit (empty: zlib took all of it)
            continue
        pending = inflater.unused_data
        if len(pending) < 2:
            pending += reader.read(2 - len(pending))
        if pending[:2] != _GZIP_MAGIC and not pending.strip(b"\x00") and reader.rest_is_zeros():
            break  # zero padding after the last member, as gzip tolerates (anything else: zlib refuses it)
        inflater, chunk = zlib.decompressobj(31), _FIRST_CHUNK
    return memoryview(out).toreadonly()


def _voxels(img, path: Path, read) -> np.ndarray:
    """`read(img.dataobj)` reshaped to (X, Y, Z); read errors become one line naming the file."""
    try:
        data = read(img.dataobj)
    except MemoryError:
        raise LiverctlError("out of memory while reading the voxel data", path=path) from None
    except Exception as exc:  # EOFError, zlib.error, ValueError ... for truncated or corrupt data
        raise LiverctlError(f"truncated or corrupt NIfTI data ({short_error(exc, path)})", path=path) from None
    return data.reshape(volume_shape(img), order="A")


def short_error(exc: BaseException, path: Path | None = None, limit: int = MESSAGE_LIMIT) -> str:
    """First line of an exception's message (`printable.first_line`), with its type and without the file name
    repeated, at most `limit` characters."""
    first = first_line(exc, 4 * limit)
    if path is not None:
        first = first.replace(f"File {path} ", "").replace(str(path), "the file")
    return one_line(f"{type(exc).__name__}: {first}" if first else type(exc).__name__, limit)

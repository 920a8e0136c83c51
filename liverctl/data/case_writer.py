"""One case -> a standalone Zarr group in ingest's work folder (runs in a worker process).

The case is read and checked (`read_case`), then written in one pass, `Z_BLOCK` slices at a time: the
image converted to float16 with its statistics counted on the way, the label turned into the liver mask
with its liver pixels per slice, and each slice's chunk file encoded and written here (`SliceArrayWriter`,
through the schema's chunk keys, codec and metadata): a worker needs no zarr-python. `complete=true` is in
the last metadata write, the group's own.
"""

from __future__ import annotations

import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.data.case_notes import (
    AXES,
    HEADER_FIXES,
    LABEL_GRID_DIFFERENCE,
    LABEL_VALUES,
    QFORM_DIFFERENCE,
    case_notes,
    label_value_attrs,
)
from liverctl.data.conversion import FLOAT16_MAX, Z_BLOCK, Float16Converter, LiverMaskConverter, label_values
from liverctl.data.liver_mask import LABEL_RULE, LABEL_RULE_ATTR, integer_labels
from liverctl.data.nifti import (
    axis_codes,
    grid_difference,
    header_scaling,
    qform_sform_difference,
    read_nifti_and_sha256,
    short_error,
    volume_geometry,
)
from liverctl.data.schema import (
    CHUNK_BYTES,
    CHUNK_CRC32,
    IMAGE,
    IMAGE_DTYPE,
    LABEL,
    LABEL_DTYPE,
    chunk_checksum,
    group_metadata,
    slice_array_metadata,
    slice_chunk_path,
    slice_encoder,
    write_metadata,
)
from liverctl.data.sources import CaseFiles
from liverctl.data.sources.labels import check_label_values
from liverctl.disk import is_disk_full, no_space_message, os_error_behind
from liverctl.errors import LiverctlError
from liverctl.workers import default_sigterm


@dataclass(frozen=True)
class CaseJob:
    case: CaseFiles
    work_dir: str
    liver_labels: tuple[int, ...] | None
    workers: int = 1  # processes reading at the same time: each may take that share of the memory


@dataclass
class CaseResult:
    case_id: str
    ok: bool
    message: str = ""
    bytes_read: int = 0
    notes: list[str] = field(default_factory=list)  # one line each, for the user (e.g. odd label values)
    no_space: bool = False  # the disk filled while writing: no later case can be written either


@dataclass
class CaseVolumes:
    """A case read and checked: its attributes so far (what the notes are made of, `case_notes`), the image as
    read (X, Y, Z) in the file's dtype with scaling applied, the label as read (training cases)."""

    attrs: dict[str, Any]
    image: np.ndarray
    label: np.ndarray | None = None


def file_fingerprint(path: Path) -> dict[str, int]:
    st = os.stat(path)
    return {"size": st.st_size, "mtime": st.st_mtime_ns}


def build_case(job: CaseJob) -> CaseResult:
    """Write one case into the work folder; every problem becomes a failed `CaseResult`, never an exception."""
    case = job.case
    try:
        return _write_case(job)
    except LiverctlError as exc:
        return CaseResult(case.case_id, False, str(exc))
    except MemoryError:
        return CaseResult(case.case_id, False, f"{case.volume}: out of memory while ingesting")
    except Exception as exc:  # one odd file must not stop the other cases; name it and the error
        if is_disk_full(os_error_behind(exc)):  # also behind a writer's own error
            shutil.rmtree(Path(job.work_dir) / case.case_id, ignore_errors=True)  # no half-written case stays
            message = no_space_message(job.work_dir, f"case {case.case_id} ({case.volume})")
            return CaseResult(case.case_id, False, message, no_space=True)
        return CaseResult(case.case_id, False, f"{case.volume}: ingest failed ({short_error(exc)})")


def _write_case(job: CaseJob) -> CaseResult:
    volumes = read_case(job.case, job.liver_labels, job.workers)
    attrs = write_case_group(Path(job.work_dir) / job.case.case_id, volumes, job.liver_labels)
    return CaseResult(job.case.case_id, True, bytes_read=attrs["size"] + attrs.get("label_size", 0),
                      notes=case_notes(attrs, job.case.volume, job.case.label))  # as a rerun says them


# ----------------------------------------------------------------------------------------------------------
# Reading and checking


def _check_finite(data: np.ndarray, path: Path, what: str) -> None:
    if data.dtype.kind != "f":
        return
    bad = data.size - int(np.count_nonzero(np.isfinite(data)))
    if bad:
        raise LiverctlError(f"{bad} non-finite {what} voxels (NaN or inf)", path=path)


def _check_float16_range(data: np.ndarray, path: Path) -> None:
    if data.dtype in (np.int8, np.uint8, np.int16):  # always within float16's range: no pass needed
        return
    peak = float(max(abs(float(data.min())), abs(float(data.max()))))
    if peak > FLOAT16_MAX:
        raise LiverctlError(
            f"has values up to {peak:g}, beyond float16's range (|HU| <= {FLOAT16_MAX:g}); is it CT in HU?",
            path=path,
        )


def _read_source(path: Path, workers: int, prefix: str = "") -> tuple[Any, np.ndarray, dict[str, Any]]:
    """(image, voxels, the attributes naming the file: path, size, mtime (before the read), sha256, and what its
    header says that its notes are made of: what nibabel fixed in it as it read it, a qform and sform apart)."""
    fp = file_fingerprint(path)
    fixes: list[str] = []
    img, data, digest = read_nifti_and_sha256(path, workers=workers, header_fixes=fixes)
    attrs = {
        f"{prefix}source": str(path.absolute()),
        f"{prefix}size": fp["size"],
        f"{prefix}mtime": fp["mtime"],
        f"{prefix}sha256": digest,
        f"{prefix}{HEADER_FIXES}": list(dict.fromkeys(fixes)),
        f"{prefix}{QFORM_DIFFERENCE}": qform_sform_difference(img),
    }
    return img, data, attrs


def read_case(case: CaseFiles, liver_labels: tuple[int, ...] | None, workers: int = 1) -> CaseVolumes:
    """Load and check a case. Its attributes lack `complete`, and `stats`, `liver_voxels` and
    `liver_pixels_per_slice` until `write_case_group` has counted them."""
    img, data, source = _read_source(case.volume, workers)
    affine, spacing = volume_geometry(img, case.volume)
    attrs: dict[str, Any] = {"split": case.split, **source, AXES: axis_codes(affine)}  # None: singular, a note
    _check_finite(data, case.volume, "image")
    _check_float16_range(data, case.volume)
    shape = tuple(int(n) for n in data.shape)
    volumes = CaseVolumes(attrs, data)
    if case.label is not None:
        label_img, label, source = _read_source(case.label, workers, "label_")
        attrs.update(source)
        if tuple(label.shape) != shape:
            raise LiverctlError(
                f"label shape {tuple(label.shape)} differs from its volume's {shape} ({case.volume.name})",
                path=case.label,
            )
        placed = label_img.header["sform_code"] > 0 or label_img.header["qform_code"] > 0  # else its affine is
        # only pixdim's (nibabel's fallback): the label says nothing of where it lies, so nothing to disagree with
        attrs[LABEL_GRID_DIFFERENCE] = grid_difference(affine, label_img.affine) if placed else None
        _check_finite(label, case.label, "label")
        label = integer_labels(label, case.label, header_scaling(label_img))  # the rule evaluate and postprocess use
        if case.known_labels is not None or liver_labels is None:  # else nothing asks about the values
            values, counts = label_values(label)
            check_label_values(values, case.known_labels, case.label, case.labels_named_by)
            attrs.update(label_value_attrs(values, counts))  # for the note on values taken as liver (`case_notes`)
        volumes.label = label
    slope, inter = header_scaling(img)  # the scaling the voxels were read with
    attrs.update(
        {
            "dtype": str(img.get_data_dtype()),
            "scaling": [slope, inter],
            "shape": list(shape),
            "affine": affine,
            "spacing": spacing,
            "stats": None,  # counted while the writer converts to float16 (`Float16Converter`)
            "liver_labels": None,
            "liver_voxels": None,
            "fold": None,  # set over all cases at the end of the run
        }
    )
    return volumes


# ----------------------------------------------------------------------------------------------------------
# Writing


class SliceArrayWriter:
    """Writes an (X, Y, Z) array chunked (X, Y, 1) at `array_dir`: its metadata (`slice_array_metadata`), then
    one slice at a time, each chunk file encoded (`slice_encoder`) and written at its key (`slice_chunk_path`).
    A slice of zeros is written too (zarr-python would leave it out as the fill value): the metadata says
    every chunk is there (`schema.EVERY_CHUNK`), so a reader takes a missing file for damage, not for zeros.
    `close` writes the metadata again with each chunk file's size and checksum (`schema.CHUNK_BYTES`,
    `schema.CHUNK_CRC32`).
    """

    def __init__(self, array_dir: Path, shape: tuple[int, int, int], dtype):
        self.meta = slice_array_metadata(shape, dtype)
        write_metadata(array_dir, self.meta)
        self.encode = slice_encoder()
        self.dir = array_dir
        self.dtype = np.dtype(dtype)
        self.sizes = [0] * int(shape[2])
        self.checksums = [0] * int(shape[2])
        self._made = False

    def write(self, z: int, values: np.ndarray) -> None:
        """Write slice `z`. Shape: values (X, Y) of the array's dtype (made C-contiguous if it is not)."""
        values = np.ascontiguousarray(values, dtype=self.dtype)
        path = slice_chunk_path(self.dir, z)
        if not self._made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made = True
        data = self.encode(values)
        write_chunk_file(path, data)
        self.sizes[z] = len(data)
        self.checksums[z] = chunk_checksum(data)

    def close(self) -> None:
        """Record each slice's chunk file size and checksum in the array's attributes (every slice written by
        then)."""
        self.meta["attributes"][CHUNK_BYTES] = self.sizes
        self.meta["attributes"][CHUNK_CRC32] = self.checksums
        write_metadata(self.dir, self.meta)


def write_chunk_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def write_case_group(out: Path, volumes: CaseVolumes, liver_labels: tuple[int, ...] | None) -> dict[str, Any]:
    """Write a case as a standalone Zarr group at `out`; the group's own metadata, with `complete=true`, is
    written last. Returns the attributes written.

    One pass, `Z_BLOCK` slices at a time: the image to float16 (`image.astype(float16)` exactly) with its
    values counted for `stats`, the label to the liver mask with its pixels per slice counted, and each
    slice's chunk file encoded and written (`SliceArrayWriter`).
    """
    if out.exists():
        shutil.rmtree(out)
    image, label, attrs = volumes.image, volumes.label, dict(volumes.attrs)
    shape = tuple(image.shape)
    image_writer = SliceArrayWriter(out / IMAGE, shape, IMAGE_DTYPE)
    converter = Float16Converter(image.dtype)
    label_writer = liver = None
    if label is not None:
        label_writer = SliceArrayWriter(out / LABEL, shape, LABEL_DTYPE)
        liver = LiverMaskConverter(liver_labels)
    for z0 in range(0, shape[2], Z_BLOCK):
        for k, values in enumerate(converter.convert(image[:, :, z0 : z0 + Z_BLOCK])):
            image_writer.write(z0 + k, values)
        if liver is not None:
            for k, values in enumerate(liver.convert(label[:, :, z0 : z0 + Z_BLOCK])):
                label_writer.write(z0 + k, values)
    for writer in (image_writer, label_writer):
        if writer is not None:
            writer.close()
    attrs["stats"] = converter.hist.stats()
    if liver is not None:
        attrs["liver_labels"] = None if liver_labels is None else list(liver_labels)
        attrs[LABEL_RULE_ATTR] = LABEL_RULE  # the mask is the rule's: a rerun need not ask (`ingest`)
        attrs["liver_voxels"] = sum(liver.per_slice)
        attrs["liver_pixels_per_slice"] = liver.per_slice
        if attrs["liver_voxels"] == 0 and LABEL_VALUES not in attrs and label.any():  # for the no-liver note
            attrs.update(label_value_attrs(*label_values(label)))
    attrs = {**attrs, "complete": True}
    write_metadata(out, group_metadata(attrs))
    return attrs


def worker_init() -> None:
    """Workers leave Ctrl-C to the main process (which stops them), and exit if it is killed. Each worker
    is one of the processes sharing the cores, so blosc encodes in one thread."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # first: a Ctrl-C during the import below was a traceback
    from numcodecs import blosc

    blosc.set_nthreads(1)
    default_sigterm()  # and exit with the main process: a half-written case is in the work folder, cleaned later

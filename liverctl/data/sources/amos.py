"""AMOS22's MRI cases, left out of a CT store. AMOS22 (amos22.zip) is the Decathlon's layout (`decathlon.py`) and,
converted for nnU-Net, nnU-Net's; its 600 cases `amos_0001` .. `amos_0600` are 500 CT and 100 MRI (AMOS-MRI), all
with the same 15 organ labels, liver 6. Ingested, the MRI cases would train a CT model on MRI, and the intensity
check cannot be relied on to say so: an MRI's 0..1500 reads to it as a CT whose rescale intercept was lost.

Which cases are MRI, in this order of evidence:
- `labeled_data_meta_0000_0599.csv`, published beside amos22.zip (Zenodo 7262581), in the dataset's folder or the
  one above it: its "Manufacturer's Model Name" per `amos_id`, an MRI scanner (`MRI_SCANNERS`) or a CT one;
- else, and for a case the CSV does not place, AMOS's numbering: ids above 500 are MRI, the split nnU-Net's AMOS
  task-1 conversion (CT only, `Dataset218_Amos2022_task1.py`) makes.

Only where every case id is AMOS's (`amos_NNNN`); one note says how many cases were left out and why.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from liverctl.data.sources.common import DataLayout, left_out_note

META_CSV = "labeled_data_meta_0000_0599.csv"
LAST_CT = 500  # nnU-Net's Dataset218_Amos2022_task1: "if int(id) <= 500: # these are the CT images"
# The scanners of labeled_data_meta_0000_0599.csv, by modality (lower case, as compared)
MRI_SCANNERS = frozenset({"ingenia", "achieva", "signa hde", "prisma"})
CT_SCANNERS = frozenset({"optima ct660", "optima ct540", "brilliance16", "somatom force", "aquilion one"})
_ID_COLUMN, _SCANNER_COLUMN = "amos_id", "Manufacturer's Model Name"
_CASE_ID = re.compile(r"^amos_(\d{4})$")


def leave_out_mri(layout: DataLayout) -> None:
    """Take AMOS's MRI cases out of `layout.cases`, with one note in `layout.skipped` (module docstring)."""
    numbers = {c.case_id: int(m[1]) for c in layout.cases if (m := _CASE_ID.match(c.case_id))}
    if not numbers or len(numbers) != len(layout.cases):
        return
    meta = next((p for p in (layout.root / META_CSV, layout.root.parent / META_CSV) if p.is_file()), None)
    by_scanner = _modality_by_scanner(meta, layout.skipped) if meta is not None else {}
    mri = sorted(c for c, n in numbers.items() if by_scanner.get(n, n > LAST_CT))
    if not mri:
        return
    layout.cases = [c for c in layout.cases if c.case_id not in mri]
    how = (f"by their scanner in {meta.name}" if by_scanner else
           f"by AMOS's numbering, ids above {LAST_CT}; {META_CSV} beside the data would name each case's scanner")
    layout.skipped.append(left_out_note(layout.root, mri, f"AMOS's MRI scans ({how}), not CT", noun="case"))


def _modality_by_scanner(path: Path, skipped: list[str]) -> dict[int, bool]:
    """Case number -> whether the metadata CSV's scanner for it is an MRI scanner, for the cases whose scanner it
    names and liverctl knows; {} (AMOS's numbering decides) where the file cannot be read as that CSV, said."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        skipped.append(f"{path}: cannot be read as AMOS's case metadata ({type(exc).__name__}): its MRI cases are "
                       f"told by AMOS's numbering instead")
        return {}
    if not rows or not {_ID_COLUMN, _SCANNER_COLUMN} <= set(rows[0]):
        skipped.append(f"{path}: has no {_ID_COLUMN!r} and {_SCANNER_COLUMN!r} columns: AMOS's MRI cases are told by "
                       "AMOS's numbering instead")
        return {}
    found: dict[int, bool] = {}
    for row in rows:
        number, scanner = (row.get(_ID_COLUMN) or "").strip(), (row.get(_SCANNER_COLUMN) or "").strip().lower()
        if number.isascii() and number.isdigit() and scanner in MRI_SCANNERS | CT_SCANNERS:
            found[int(number)] = scanner in MRI_SCANNERS
    return found

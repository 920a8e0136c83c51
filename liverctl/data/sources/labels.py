"""Label values and their names: a source's dataset.json, which values mean liver, values nobody named.

Decathlon (and nnU-Net v1) write `"labels": {"0": "background", "1": "liver", "2": "cancer"}`; nnU-Net
v2 writes `"labels": {"background": 0, "liver": 1}` (a region may list several values). A value means
liver when its name contains "liver", or when it names a tumour ("tumour", "tumor", "cancer", "lesion",
"metastasis") and every other named structure is the liver: a liver tumour is part of the liver mask
the competition scores, another organ's tumour is not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.data.liver_mask import label_value_problem
from liverctl.errors import LiverctlError
from liverctl.plural import agree
from liverctl.printable import quoted

DATASET_JSON = "dataset.json"
_TUMOUR_WORDS = ("tumour", "tumor", "cancer", "lesion", "metasta")
_BACKGROUND = ("background", "bg", "none", "unlabeled", "unlabelled")


def read_dataset_json(root: Path, name: str = DATASET_JSON) -> dict[str, Any] | None:
    """The source's dataset.json (or the list called `name`) as a dict; None where there is none. Unreadable JSON
    is an error."""
    path = root / name
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_bytes())  # bytes: json finds the encoding, a Windows editor's BOM included
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LiverctlError(f"cannot be read as JSON ({type(exc).__name__}: {exc})", path=path) from None
    except RecursionError:
        raise LiverctlError("cannot be read as JSON (nested too deep)", path=path) from None
    except ValueError:  # int() of a number of over 4300 digits
        raise LiverctlError("cannot be read as JSON (a number of thousands of digits)", path=path) from None
    if not isinstance(payload, dict):
        raise LiverctlError("is not a JSON object", path=path)
    return payload


def label_names(payload: dict[str, Any] | None, path: Path, file_name: str = DATASET_JSON) -> dict[int, str] | None:
    """value -> name from a dataset.json's `labels` (either orientation; `file_name`: the list's, in `path`); None
    without `labels`."""
    if payload is None or "labels" not in payload:
        return None
    raw = payload["labels"]
    names: dict[int, str] = {}
    bad = LiverctlError(
        'has a "labels" entry that is neither {"1": "liver"} nor {"liver": 1}', path=path / file_name
    )
    if not isinstance(raw, dict):
        raise bad
    for key, value in raw.items():
        if _is_int(key) and isinstance(value, str):  # {"1": "liver"}
            pairs = [(int(key), value)]
        elif isinstance(value, (int, float)):  # {"liver": 1}; a bool or a float is said below
            pairs = [(value, str(key))]
        elif isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):  # {"liver": [1, 2]}
            pairs = [(v, str(key)) for v in value]
        else:
            raise bad
        for v, name in pairs:  # a value in several regions gets all their names: "liver + tumor"
            if (problem := label_value_problem(v)) is not None:  # the rule --liver-labels is checked by
                raise LiverctlError(f'has a "labels" entry {quoted(name, 40)}: {problem}', path=path / file_name)
            names[v] = f"{names[v]} + {name}" if v in names else name
    return names


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if not isinstance(value, str):
        return False
    try:  # not str.isdigit: "²" is a digit to it and no number to int()
        int(value)
    except ValueError:
        return False
    return True


def liver_values(names: dict[int, str]) -> tuple[int, ...]:
    """The values whose names mean liver (module docstring); empty when none does."""
    structures = {v: n.lower() for v, n in names.items() if v != 0 and n.lower().strip() not in _BACKGROUND}
    liver = {v for v, n in structures.items() if "liver" in n}
    if 0 in names and "liver" in names[0].lower():  # named so, and refused as one (`check_liver_labels`)
        liver.add(0)
    tumours = {v for v, n in structures.items() if v not in liver and any(w in n for w in _TUMOUR_WORDS)}
    if liver and set(structures) == liver | tumours:
        liver |= tumours
    return tuple(sorted(liver))


def check_label_values(
    values: np.ndarray, known: tuple[int, ...] | None, path: Path, named_by: str = DATASET_JSON
) -> None:
    """Raise when a label holds values outside `known` (the values its source names, in `named_by`); None: no check.
    `values`: the label's distinct values, sorted (`liverctl.data.conversion.label_values`)."""
    if known is None:
        return
    outside = values[~np.isin(values, np.asarray(known))]
    if outside.size:
        shown = ", ".join(f"{v:g}" for v in outside[:5].tolist()) + (", ..." if outside.size > 5 else "")
        raise LiverctlError(
            f"holds {agree(outside.size, 'label value', 'label values')} {shown} that {named_by} does not name "
            f"(it names {list(known)}); "
            "give --liver-labels for this source to say which values mean liver",
            path=path,
        )

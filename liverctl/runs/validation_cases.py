"""A run's validation cases: the store's training cases its config holds out, chosen as training chose
them (`liverctl.data.dataset.split_rows`: `data.fold`, capped by `data.max_val_cases`), in the store's
case order. `report` predicts these and `submit`'s `auto` post-processing scores on them.

The split comes from the store as it is now, so a run also records the split it trained with: its
checkpoints hold `cases` = {training: [ids], validation: [ids]} (`case_split`, written by the trainer).
`checked_validation_cases` refuses to score a run on a case it trained on (a store re-ingested with other
folds); a checkpoint from before the record gets the store's cases unchecked, with a note saying so.
"""

from __future__ import annotations

from typing import Any

from liverctl.errors import LiverctlError

CASES_KEY = "cases"  # the checkpoint entry: {"training": [case ids], "validation": [case ids]}
SIDES = ("training", "validation")


def _case_ids(index, rows) -> list[str]:
    """The case ids of slice-index `rows`, in the store's case order."""
    import numpy as np

    codes = sorted(set(np.asarray(index.case)[rows].tolist()))
    return [index.case_ids[c] for c in codes]


def case_split(store, train_rows, val_rows) -> dict[str, list[str]]:
    """What a run trains and validates on (`split_rows`' rows), as the checkpoint records it."""
    index = store.slice_index()
    return {"training": _case_ids(index, train_rows), "validation": _case_ids(index, val_rows)}


def validation_cases(cfg: dict, store) -> list[str]:
    """Case ids held out by the run whose resolved config is `cfg`, from a `LiverStore`.

    Raises LiverctlError (from `split_rows`) when the store has no case in the run's fold.
    """
    from liverctl.data.dataset import split_rows

    data = cfg["data"]
    _, val_rows = split_rows(store, int(data["fold"]), int(data.get("max_val_cases", 0) or 0))
    return _case_ids(store.slice_index(), val_rows)


def check_recorded_split(record: Any) -> str | None:
    """What is wrong with a checkpoint's `cases` entry (None when it is two lists of case ids)."""
    if not isinstance(record, dict):
        return f"should be a table, not {type(record).__name__}"
    for side in SIDES:
        ids = record.get(side)
        if not isinstance(ids, list) or not all(isinstance(c, str) for c in ids):
            return f"should hold '{side}': a list of case ids"
    return None


def _crossed(record: dict, side: str, cases) -> list[str]:
    """The cases of `cases` that the record puts on `side`."""
    recorded = set(record[side])
    return [c for c in cases if c in recorded]


def check_same_split(record: dict | None, split: dict[str, list[str]], store_path, where) -> None:
    """A resume goes on with the split its run began with: one line when the store now validates on a case
    the run trained on, or trains on one it validated on (re-ingested with other folds)."""
    if record is None:
        return
    for now, then in (("validation", "training"), ("training", "validation")):
        crossed = _crossed(record, then, split[now])
        if crossed:
            raise LiverctlError(
                f"store {store_path} now puts {len(crossed)} of this run's {then} cases on the {now} side "
                f"({', '.join(crossed[:3])}): its folds differ from those the run began with; resume on that store "
                "(--store) or train a new run",
                path=where,
            )


def checked_validation_cases(cfg: dict, record: dict | None, store, where) -> tuple[list[str], str | None]:
    """(`validation_cases(cfg, store)`, a note or None), for scoring a run on its held-out cases.

    `record`: the run's checkpoint `cases` entry (None for a checkpoint from before the record). LiverctlError
    naming `where` (the checkpoint) when the store holds out a case the run trained on; the note says that a
    run without the record was not checked.
    """
    cases = validation_cases(cfg, store)
    if record is None:
        return cases, (f"{where} records no training cases (written before liverctl recorded them): its validation "
                       f"cases are the store's fold {cfg['data']['fold']} as it is now, not checked against what the "
                       "run trained on")
    trained = _crossed(record, "training", cases)
    if trained:
        raise LiverctlError(
            f"refused to score the run on store {store.path}: {len(trained)} of the cases it holds out as fold "
            f"{cfg['data']['fold']} are cases the run trained on ({', '.join(trained[:3])}); the store's folds differ "
            "from those it trained with (re-ingested?); give the store it trained on (--store)",
            path=where,
        )
    return cases, None

"""A run's validation cases: the store's training cases its config holds out, chosen as training chose
them (`liverctl.data.dataset.split_rows`: `data.fold`, capped by `data.max_val_cases`), in the store's
case order. `report` predicts these and `submit`'s `auto` post-processing scores on them."""

from __future__ import annotations


def validation_cases(cfg: dict, store) -> list[str]:
    """Case ids held out by the run whose resolved config is `cfg`, from a `LiverStore`.

    Raises LiverctlError (from `split_rows`) when the store has no case in the run's fold.
    """
    import numpy as np

    from liverctl.data.dataset import split_rows

    data = cfg["data"]
    _, val_rows = split_rows(store, int(data["fold"]), int(data.get("max_val_cases", 0) or 0))
    index = store.slice_index()
    codes = sorted(set(np.asarray(index.case)[val_rows].tolist()))
    return [index.case_ids[c] for c in codes]

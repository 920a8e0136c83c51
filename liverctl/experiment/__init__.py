"""Cross-validation experiments: every fold of a store trained as one experiment under `runs/<name>/`.

The Kaggle / nnU-Net recipe in two commands (`train --folds all`, `submit --run runs/<name>`):

| module        | owns                                                                              |
|---------------|-----------------------------------------------------------------------------------|
| `folder.py`   | the experiment folder's layout, `experiment.json` (atomic), `--folds`, checks      |
| `train.py`    | training the folds one after another (start, resume, one time budget)             |
| `oof.py`      | out-of-fold probabilities (uint8 in `oof.zarr`), pooled figures                    |
| `decide.py`   | threshold and post-processing chosen on the pooled out-of-fold predictions        |
| `summary.py`  | the experiment as one row of `liverctl runs` (files only, no torch / zarr)         |

```
runs/<name>/experiment.json    format, preset, store, trained_in (the folder a relative store is relative
                                  to), folds, config, status, per-fold results,
                                  cv (per-fold best volume Dice mean +- std; std null for one fold), oof (pooled figures),
                                  decision (threshold, post, every option's score)
runs/<name>/fold-<k>/          an ordinary run folder (watch, runs, report, resume work on it)
runs/<name>/oof.zarr/<case>    uint8 (X, Y, Z): out-of-fold probability * 255; attrs fold, complete
```
Out-of-fold predictions exist only for cases in a fold (fold >= 0): the train-only cases of extra
sources (fold code -2) are trained on by every fold and never held out.
"""

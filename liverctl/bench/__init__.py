"""`liverctl bench`: liverctl measured against the notebook pipeline, rebuilt here and only here.

- `baseline.py`: the notebook pipeline (per-slice float16 `.npy` cache, three-file 2.5D Dataset,
  `num_workers=0`, one-slice-at-a-time prediction, the classic RLE snippet);
- `timing.py`: repeat-and-median timing;
- `run.py`: the orchestration, the table and the JSON.
"""

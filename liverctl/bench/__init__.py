"""`liverctl bench`: liverctl measured against the notebook pipeline, rebuilt here and only here.

- `baseline.py`: the notebook pipeline (per-slice float16 `.npy` cache, three-file 2.5D Dataset,
  `num_workers=0`, one-slice-at-a-time prediction, the classic RLE snippet);
- `timing.py`: repeat-and-median timing in turns;
- `context.py`: settings, the run's context, the same samples for both sides, failure-tolerant timing;
- `report.py`: figures, targets and verdicts, the table and the JSON;
- `ingest.py`, `loader.py`, `training.py`, `submit_side.py`, `real.py`: one part each (`--only`);
- `run.py`: the orchestration.
"""

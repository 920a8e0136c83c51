"""`liverctl watch`: a live Textual view of a run's `events.jsonl` (never imports torch, zarr or the trainer)."""

"""Runs: the run folder, its event log, checkpoints and the history folded from them.

Kept free of torch, numpy and zarr at import time: the TUI imports `liverctl.runs.events`."""

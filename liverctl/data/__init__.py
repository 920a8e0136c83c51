"""Data: finding cases (`sources/`), the synthetic phantom, opening NIfTI safely, ingest into the Zarr
store, reading it back (`store.py`), and the training batches drawn from it (`dataset.py`, `augment_device.py`)."""

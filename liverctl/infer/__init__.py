"""Inference: prediction with TTA and ensembles, cc3d post-processing, run-length encoding, the submission
CSV, the `submit` pipeline and scoring a submission (`evaluate.py`)."""

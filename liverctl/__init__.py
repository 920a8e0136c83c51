"""liverctl: a folder of CT volumes (NIfTI) to a Kaggle liver-segmentation submission."""

__version__ = "0.1.0"

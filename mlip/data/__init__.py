"""The dataset store: frames in one HDF5 file, read back lazily.

>>> from mlip.data import build_dataset, Dataset
>>> build_dataset(["dumps/"], "data.h5", types={1: "Cu"})      # doctest: +SKIP
>>> ds = Dataset("data.h5"); train, val = ds.split(0.1, seed=0)  # doctest: +SKIP

Imports numpy and h5py only (no torch).
"""

from mlip.data.build import build_dataset, read_sources
from mlip.data.dataset import Dataset, Subset
from mlip.data.store import FORMAT_VERSION, file_sha256, write_dataset

__all__ = [
    "FORMAT_VERSION",
    "Dataset",
    "Subset",
    "build_dataset",
    "file_sha256",
    "read_sources",
    "write_dataset",
]

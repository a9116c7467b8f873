"""Small HDF5 data sets, as pipeline/data/hdf5.py reads them."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def write_h5(path: Path, n: int = 6, labels=None, split=None, images=None, **attrs) -> Path:
    """An HDF5 data set: n tiny images, labels 0, 1, 2, 0, ... unless given, `split` if given,
    and `attrs` (e.g. class_names) on the file."""
    with h5py.File(path, "w") as f:
        if images is None:
            images = np.arange(n * 4 * 5 * 3, dtype=np.uint8).reshape(n, 4, 5, 3)
        f["images"] = images
        f["labels"] = labels if labels is not None else np.arange(n) % 3
        if split is not None:
            f["split"] = split
        f.attrs.update(attrs)
    return path

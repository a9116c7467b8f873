"""The data sets and teachers the benchmarks make on the spot (nothing is downloaded):
image stores of synthetic or noise images, and random-init teachers saved as checkpoints."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

import models
from pipeline.data.hdf5 import HDF5Source
from pipeline.data.imagestore import write_image_store
from pipeline.data.synthetic import SyntheticSource
from pipeline.spec import parse_spec


def synthetic_store(path: Path, per_class: int, size: int, seed: int, shard_rows: int) -> None:
    """An image store at `path` of pipeline.data.synthetic's images: `per_class` training and
    a quarter as many (at least one) test images per class, `size` px."""
    source = SyntheticSource(seed=seed, train_per_class=per_class, test_per_class=max(1, per_class // 4), size=size)
    write_image_store(source, source.items(), path, size,
                      {"source": "synthetic", "fingerprint": source.fingerprint()}, shard_rows=shard_rows)


def noise_store(root: Path, classes: int, per_class: int, size: int, seed: int) -> Path:
    """An image store, root/store.zarr, of `per_class` training and one test noise image per
    class, written from root/images.h5."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class + 1)
    with h5py.File(root / "images.h5", "w") as f:
        f["images"] = rng.integers(0, 256, (len(labels), size, size, 3), dtype=np.uint8)
        f["labels"] = labels
        f["split"] = np.tile([0] * per_class + [2], classes)
    source = HDF5Source(root / "images.h5")
    write_image_store(source, source.items(), root / "store.zarr", size, {"source": "generated"})
    return root / "store.zarr"


def random_teacher(spec: str, classes: int, seed: int, path: Path) -> models.Net:
    """A random-init teacher of `spec` (timm name and key=value kwargs) for `classes`
    classes, initialised after torch.manual_seed(seed); its weights saved at `path`."""
    name, kwargs = parse_spec(spec)
    torch.manual_seed(seed)
    teacher = models.create(name, classes, **kwargs)
    models.save_weights(teacher, path)
    return teacher

"""The HDF5 reader: a data set's images, labels and splits as datasets of one HDF5 file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image

from pipeline.data.files import source_fingerprint
from pipeline.data.source import SPLITS, BadImage, BadSource, Item, Items, strings
from pipeline.data.splits import move_fraction


class HDF5Source:
    """Images in one HDF5 file: dataset `images` (N, H, W, 3) uint8, `labels` (N,) integers,
    optional `split` (N,) of "train"/"val"/"test" strings or 0/1/2 (without it, a seeded,
    stratified `holdout` fraction of each class is test and the rest train, as ImageFolder
    does), class names from a `class_names` attribute (of the file or of `labels`) or dataset,
    else "class_0", "class_1", ... Layout errors raise BadSource naming the file and the dataset.

    The file is opened on first `load` in each process and never pickled."""

    def __init__(self, path: str | Path, images: str = "images", labels: str = "labels",
                 split: str = "split", class_names: str = "class_names", holdout: float = 0.25, seed: int = 0):
        if not 0 <= holdout < 1:
            raise ValueError(f"holdout must be in [0, 1), got {holdout}")
        self.path = Path(path)
        self.names = {"images": images, "labels": labels, "split": split, "class_names": class_names}
        self.holdout, self.seed = holdout, seed
        self._file: h5py.File | None = None
        self._pid = 0
        self.classes, _ = self._index()

    def items(self) -> Items:
        """One item per row, in row order; the key is the row."""
        return self._index()[1]

    def load(self, item: Item) -> Image.Image:
        if self._pid != os.getpid():  # first load here, or a forked/unpickled copy
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        try:
            return Image.fromarray(self._file[self.names["images"]][int(item.key)])
        except (OSError, ValueError, IndexError) as error:
            raise BadImage(f"{self.path}: cannot read row {item.key} of "
                           f"{self.names['images']!r} ({error})") from error

    def fingerprint(self) -> str:
        stat = self.path.stat()
        datasets: list[str] = []

        def describe(name: str, obj: h5py.HLObject) -> None:
            if isinstance(obj, h5py.Dataset):
                datasets.append(f"{name} {obj.shape} {obj.dtype}")

        with self._open() as f:
            f.visititems(describe)
            # The holdout makes the split only without a split dataset (files with one keep their fingerprint).
            held = {} if self.names["split"] in f else {"holdout": self.holdout, "seed": self.seed}
        return source_fingerprint("hdf5", {**self.names, **held}, [f"{stat.st_size} {stat.st_mtime_ns}", *datasets])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_pid": 0}

    def _index(self) -> tuple[list[str], Items]:
        with self._open() as f:
            images = self._dataset(f, "images")
            if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
                self._fail("images", f"must be (N, H, W, 3) uint8, not {images.shape} {images.dtype}")
            n = images.shape[0]
            labels = self._dataset(f, "labels")[()]
            if labels.shape != (n,) or labels.dtype.kind not in "iu":
                self._fail("labels", f"must be {n} integers (one per image), "
                                     f"not {labels.shape} {labels.dtype}")
            classes = self._class_names(f, labels)
            if n and (labels.min() < 0 or labels.max() >= len(classes)):
                self._fail("labels", f"values must be in 0..{len(classes) - 1} ({len(classes)} classes), "
                                     f"found {labels.min()}..{labels.max()}")
            splits_given = self.names["split"] in f
            splits = self._splits(f, n) if splits_given else ["train"] * n
        width = len(str(max(n - 1, 0)))
        items = Items(strings(f"{row:0{width}d}" for row in range(n)), labels.astype(np.int32),
                      np.array([SPLITS.index(split) for split in splits], np.uint8), np.arange(n, dtype=np.int64))
        return classes, items if splits_given else move_fraction(items, "train", "test", self.holdout, self.seed)

    def _class_names(self, f: h5py.File, labels: np.ndarray) -> list[str]:
        name = self.names["class_names"]
        for attrs in (f.attrs, f[self.names["labels"]].attrs):
            if name in attrs:
                return _strings(attrs[name])
        if name in f:
            return _strings(f[name][()])
        return [f"class_{i}" for i in range(int(labels.max(initial=-1)) + 1)]

    def _splits(self, f: h5py.File, n: int) -> list[str]:
        raw = self._dataset(f, "split")[()]
        if raw.shape != (n,):
            self._fail("split", f"must have one entry per image ({n}), not shape {raw.shape}")
        if raw.dtype.kind in "iu":
            by_number = dict(enumerate(SPLITS))
            splits = [by_number.get(v, str(v)) for v in raw.tolist()]
        else:
            splits = _strings(raw)
        wrong = sorted(set(splits) - set(SPLITS))
        if wrong:
            self._fail("split", f"values must be train/val/test or 0/1/2, found {wrong[:5]}")
        return splits

    def _open(self) -> h5py.File:
        try:
            return h5py.File(self.path, "r")
        except OSError as error:
            raise BadSource(f"{self.path}: cannot open as HDF5 ({error})") from error

    def _dataset(self, f: h5py.File, role: str) -> h5py.Dataset:
        if not isinstance(f.get(self.names[role]), h5py.Dataset):
            self._fail(role, "is missing (pass the dataset's name as an option)")
        return f[self.names[role]]

    def _fail(self, role: str, problem: str) -> None:
        raise BadSource(f"{self.path}: dataset {self.names[role]!r} {problem}")


def _strings(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(values).tolist()]

"""What every data set source provides: a list of items and a way to load one image.

A source is picklable (dask ships it to worker processes) and opens files lazily.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

SPLITS = ("train", "val", "test")


@dataclass(frozen=True, slots=True)
class Item:
    """One image of a data set; `key` is whatever the source needs to load it (a path, a row)."""

    id: str
    label: int
    split: str  # one of SPLITS
    key: str | int


def strings(values: Iterable[str]) -> np.ndarray:
    """`values` as a numpy array of variable-length strings (16 bytes each, plus the
    characters of one longer than 15), filled as they come: no list of them all, and no
    parts joined (joined parts leave freed arenas behind: 2.3x the array's memory)."""
    return np.fromiter(values, dtype=np.dtypes.StringDType())


@dataclass(frozen=True, eq=False)
class Items:
    """A data set's images as columns, in a stable order: an array each, so that a million
    images are a few arrays (about 65 bytes an image, ids of ImageNet's length) and not a
    million Python objects (about 170 bytes each with its id). `items[i]` is image i's Item;
    a slice or an index array gives Items."""

    ids: np.ndarray           # variable-length strings (`strings`)
    labels: np.ndarray        # int32
    splits: np.ndarray        # uint8: indices into SPLITS
    keys: np.ndarray | None   # what the source loads an image by: strings or int64 rows; None: the ids

    @classmethod
    def of(cls, items: Iterable[Item]) -> Items:
        """Items from Item objects (a small data set's way to make them)."""
        items = list(items)
        keys = [item.key for item in items]
        ints = bool(keys) and isinstance(keys[0], int)
        return cls(strings(item.id for item in items), np.array([item.label for item in items], np.int32),
                   np.array([SPLITS.index(item.split) for item in items], np.uint8),
                   np.array(keys, np.int64) if ints else strings(keys))

    def moved(self, rows: np.ndarray, split: str) -> Items:
        """These items with those at `rows` in `split`."""
        splits = self.splits.copy()
        splits[rows] = SPLITS.index(split)
        return type(self)(self.ids, self.labels, splits, self.keys)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int | slice | np.ndarray) -> Item | Items:
        if isinstance(index, int | np.integer):
            keys = self.ids if self.keys is None else self.keys
            key = int(keys[index]) if keys.dtype.kind in "iu" else str(keys[index])
            return Item(str(self.ids[index]), int(self.labels[index]), SPLITS[self.splits[index]], key)
        return type(self)(self.ids[index], self.labels[index], self.splits[index],
                          None if self.keys is None else self.keys[index])

    def __iter__(self) -> Iterator[Item]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Items) and all(
            np.array_equal(a, b) for a, b in zip(self._columns(), other._columns()))

    def _columns(self) -> tuple[np.ndarray, ...]:
        return self.ids, self.labels, self.splits, self.ids if self.keys is None else self.keys


class Source(Protocol):
    classes: list[str]

    def items(self) -> Items:
        """Every image, in a stable order; the store keeps this order."""

    def load(self, item: Item) -> Image.Image:
        """The image as RGB; raises BadImage naming the file when it cannot be read."""

    def fingerprint(self) -> str:
        """Changes whenever the source's content may have changed (names, sizes, mtimes, or hashes)."""


class BadImage(ValueError):
    """An image that cannot be decoded; the message names the file and what is wrong."""


class BadSource(ValueError):
    """A data set whose layout or metadata is wrong; the message names the file and the fix."""

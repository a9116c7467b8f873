"""Fast row access to Zarr arrays: in memory when they fit a budget, else read from disk,
every read checked; the image store and the teacher cache both read through it."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import zarr

from cache.storage.integrity import checked, read_all

DEFAULT_BUDGET = 2 << 30  # bytes an array may take in memory before reads go to disk
Span = tuple[int, int]  # rows lo:hi of an array


class RowReader(Protocol):
    """Rows of an array by integer index, as numpy arrays: what Rows and HeldRows are, and every
    reader read like Rows (the image store's JpegRows, the teacher cache's TopKLogits and
    QuantizedVectors). Beyond this, the readers of the teacher cache (Rows, HeldRows, TopKLogits,
    QuantizedVectors) take one element of each row (Rows.take's `column`: a view per image), and
    all but HeldRows, itself what holding gives, hold spans of rows in memory (Rows.held)."""

    shape: tuple[int, ...]

    def __len__(self) -> int:
        """Rows of the array."""

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        """take(index)."""

    def take(self, index: np.ndarray) -> np.ndarray:
        """Rows `index`, in any order, repeats allowed."""


def in_memory_bytes(array: zarr.Array) -> int:
    """About what `array` takes read into memory; for variable-length elements (a jpeg image
    store's), their stored bytes."""
    if array.dtype == object:
        return array.nbytes_stored()
    return int(np.prod(array.shape)) * array.dtype.itemsize


class Rows:
    """Rows of a Zarr array by integer index. Held in memory when it fits the budget,
    so a random minibatch is a numpy gather; otherwise each read touches only the
    chunks it needs. Every read is checked (cache/storage/integrity.py): damaged data raises
    DamagedData naming the shard file."""

    def __init__(self, array: zarr.Array, budget: int = DEFAULT_BUDGET):
        self.shape, self.dtype = array.shape, array.dtype
        self.shard_rows: int = (array.shards or array.chunks)[0]  # rows of one shard file
        # A budget of 0 (each block of the teacher pass) asks nothing of the store: a jpeg
        # store's bytes are the sizes of all its shard files, a listing that grows with N.
        self._data = read_all(array) if budget > 0 and in_memory_bytes(array) <= budget else array

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        return self.take(index)

    def take(self, index: np.ndarray, column: np.ndarray | None = None) -> np.ndarray:
        """Rows `index` (any order, repeats allowed); with `column`, element column[i] of
        row index[i] (e.g. one view per image)."""
        index = np.asarray(index)
        if isinstance(self._data, np.ndarray):
            return self._data[index] if column is None else self._data[index, column]
        out = self._read(index)
        return out if column is None else out[np.arange(len(index)), column]

    def held(self, spans: Sequence[Span]) -> Rows | HeldRows:
        """Rows `spans` in memory, read like these Rows by their own indices (each must fall
        in a span): from disk one contiguous slice per span, which costs zarr far less per
        row than reading the same rows chunk by chunk; held in memory already, these Rows."""
        if isinstance(self._data, np.ndarray):
            return self
        return HeldRows(np.concatenate([read_span(self._data, span) for span in spans]), spans, self.shape)

    def _read(self, index: np.ndarray) -> np.ndarray:
        if len(index) == 0:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        lo, hi = int(index.min()), int(index.max()) + 1
        with checked(self._data, slice(lo, hi)):
            if hi - lo <= 2 * len(index):
                # Dense rows: one slice costs zarr a third of what the same rows cost by oindex.
                return self._data[lo:hi][index - lo]
            order = np.argsort(index, kind="stable")
            out = np.empty((len(index), *self.shape[1:]), dtype=self.dtype)
            out[order] = self._data.oindex[index[order]]
            return out


def read_span(array: zarr.Array, span: Span) -> np.ndarray:
    """Rows lo:hi of `array`, checked (cache/storage/integrity.py)."""
    with checked(array, slice(*span)):
        return array[slice(*span)]


class HeldRows:
    """Rows of an array held in memory for a while (Rows.held): the rows of `spans`, one after
    another in `data`, read like Rows by the array's own row indices."""

    def __init__(self, data: np.ndarray, spans: Sequence[Span], shape: tuple):
        self.shape, self.dtype, self._data = shape, data.dtype, data
        self._starts = np.array([lo for lo, _ in spans], dtype=np.int64)
        self._stops = np.array([hi for _, hi in spans], dtype=np.int64)
        self._offsets = np.cumsum([0, *(self._stops - self._starts)[:-1]])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        return self.take(index)

    def take(self, index: np.ndarray, column: np.ndarray | None = None) -> np.ndarray:
        """As Rows.take; IndexError for a row outside the spans."""
        index = np.asarray(index)
        span = np.searchsorted(self._starts, index, side="right") - 1
        if len(index) and (span.min() < 0 or (index >= self._stops[span]).any()):
            raise IndexError(f"rows {index[(span < 0) | (index >= self._stops[span])][:5].tolist()} "
                             "are not held")
        local = index - self._starts[span] + self._offsets[span]
        return self._data[local] if column is None else self._data[local, column]

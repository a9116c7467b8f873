"""The loader's read orders ([train] order): the training positions an epoch serves, in
what order, and what their batches read. Every order serves an image the same view and
targets: the views are drawn with the random order's permutation (`epoch_draw`), whichever
order is served."""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from cache.storage.rows import RowReader, Span
from pipeline.data.imagestore import Images, ImageStore

ORDERS = ("auto", "random", "shards")  # [train] order
_SHARDS = 1  # names the shards order's own generator of an epoch: [seed, epoch, _SHARDS]


class BatchSources(NamedTuple):
    """What batches read: images by store row; the cached view boxes, logits and features
    by training position (replayed views, where the view boxes are) or by store row (the
    eval view); None where absent."""
    images: Images
    params: RowReader | None
    logits: RowReader | None
    features: RowReader | None

    def held(self, rows: Sequence[Span], positions: Sequence[Span]) -> BatchSources:
        """These sources' rows of store rows `rows` (whole shards) and training `positions` in
        memory (Rows.held)."""
        teacher = positions if self.params is not None else rows
        return BatchSources(*(None if a is None else a.held(by) for a, by in ((self.images, rows),
                                                                              (self.params, positions),
                                                                              (self.logits, teacher),
                                                                              (self.features, teacher))))


class Window(NamedTuple):
    """Training positions an epoch serves one after another; their batches read what the
    order's `hold(window)` gives, got at the window's first batch and dropped after its last
    (a batch may straddle two windows). Plain arrays: a read process is sent it."""
    positions: np.ndarray                # training positions, in the order they are served
    shards: np.ndarray | None = None     # training positions lo:hi of each of its store shards; None: all


def resolved_order(order: str, pixels: int, budget: int) -> str:
    """[train] order as served: `auto` is shards where a store of `pixels` bytes of decoded
    images (images x side^2 x 3) exceeds the memory `budget`, so that a raw store is read from
    disk, else random. Decoded bytes, not stored ones: they are known before a store is
    written (the fingerprints need the order), and a jpeg store whose JPEGs would fit is
    decoded on every read in either order, so shards costs it no speed."""
    if order != "auto":
        return order
    return "shards" if pixels > budget else "random"


def epoch_draw(seed: int, epoch: int, count: int, views: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """The random order of `epoch` over `count` training positions, then the view of each
    among `views` (None for none): one draw, whichever order is served, so the views never
    depend on it."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(count)
    return order, rng.integers(views, size=count) if views else None


class RandomOrder:
    """Each epoch a permutation of all `count` training positions (epoch_draw's), one window
    whose batches read each row where it lies, in memory or on disk."""

    def __init__(self, seed: int, count: int, sources: BatchSources):
        self.seed, self.count, self.sources = seed, count, sources

    def windows(self, epoch: int) -> list[Window]:
        """The epoch's one window."""
        return [Window(epoch_draw(self.seed, epoch, self.count)[0])]

    def hold(self, window: Window) -> BatchSources:
        """What the window's batches read: every row where it lies."""
        return self.sources


class ShardsOrder:
    """Each epoch the store's shards (those with training rows) in a shuffled order, `window`
    at a time, a window's training positions shuffled: a draw of its own, from the epoch's
    generator [seed, epoch, 1]. A window's rows of the store and the cache are read whole, a
    shard at a time, and held only while its batches are made."""

    def __init__(self, seed: int, store: ImageStore, rows: np.ndarray, window: int, sources: BatchSources):
        self.seed, self.store, self.rows, self.window, self.sources = seed, store, rows, window, sources
        shard_of = rows // store.images.shard_rows  # non-decreasing: rows are in store order
        self._shards = np.unique(shard_of)
        # Training positions lo:hi of each shard of self._shards.
        self._bounds = np.searchsorted(shard_of, np.stack([self._shards, self._shards + 1], axis=1))

    def windows(self, epoch: int) -> list[Window]:
        """The epoch's windows, in the order they are served."""
        rng = np.random.default_rng([self.seed, epoch, _SHARDS])
        shards = rng.permutation(len(self._shards))
        windows = []
        for start in range(0, len(shards), self.window):
            bounds = self._bounds[np.sort(shards[start:start + self.window])]
            positions = rng.permutation(np.concatenate([np.arange(lo, hi) for lo, hi in bounds]))
            windows.append(Window(positions, bounds))
        return windows

    def hold(self, window: Window) -> BatchSources:
        """What the window's batches read: its whole store shards and their cache rows, in memory."""
        size, end = self.store.images.shard_rows, len(self.store.labels)
        shards = self.rows[window.shards[:, 0]] // size
        rows = [(int(s) * size, min((int(s) + 1) * size, end)) for s in shards]
        return self.sources.held(rows, [(int(lo), int(hi)) for lo, hi in window.shards])

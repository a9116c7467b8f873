"""The loader's read orders ([train] order): the training positions an epoch serves, in
what order, and what their batches read. Every order serves an image the same view and
targets: the views are drawn with the random order's permutation (`epoch_draw`), whichever
order is served."""
from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from functools import cached_property
from multiprocessing import get_context
from typing import NamedTuple

import numpy as np

from cache.storage.rows import RowReader, Span
from pipeline.data.imagestore import Images, ImageStore

ORDERS = ("random", "shards")  # [train] order
_SHARDS = 1  # names the shards order's own generator of an epoch: [seed, epoch, _SHARDS]


class BatchSources(NamedTuple):
    """What batches read: images by store row; the cached view boxes, logits and features
    by training position (replayed views, where the view boxes are) or by store row (the
    eval view); None where absent."""
    images: Images
    params: RowReader | None
    logits: RowReader | None
    features: RowReader | None

    def held(self, rows: Sequence[Span], positions: Sequence[Span], pool: Executor | None) -> BatchSources:
        """These sources' rows of store rows `rows` (whole shards) and training `positions` in
        memory (Rows.held); the images, one chunk each and the bulk of the reading, by `pool` if given."""
        teacher = positions if self.params is not None else rows
        return BatchSources(self.images.held(rows, pool), *(None if a is None else a.held(by)
                                                            for a, by in ((self.params, positions),
                                                                          (self.logits, teacher),
                                                                          (self.features, teacher))))


class Window(NamedTuple):
    """Training positions an epoch serves one after another, and what their batches read:
    got at the window's first batch, dropped after its last (a batch may straddle two windows)."""
    positions: np.ndarray                # training positions, in the order they are served
    sources: Callable[[], BatchSources]


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
        return [Window(epoch_draw(self.seed, epoch, self.count)[0], lambda: self.sources)]


class ShardsOrder:
    """Each epoch the store's shards (those with training rows) in a shuffled order, `window`
    at a time, a window's training positions shuffled: a draw of its own, from the epoch's
    generator [seed, epoch, 1]. A window's rows of the store and the cache are read whole, a
    shard at a time (by `read_processes` processes if any, else by the loader's thread), and
    held only while its batches are made."""

    def __init__(self, seed: int, store: ImageStore, rows: np.ndarray, window: int, sources: BatchSources,
                 read_processes: int = 0):
        self.seed, self.store, self.rows, self.window = seed, store, rows, window
        self.sources, self.read_processes = sources, read_processes
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
            windows.append(Window(positions, lambda bounds=bounds: self._hold(bounds)))
        return windows

    def _hold(self, bounds: np.ndarray) -> BatchSources:
        """The sources of the training positions lo:hi of `bounds`, whole store shards, in memory."""
        size, end = self.store.images.shard_rows, len(self.store.labels)
        shards = self.rows[bounds[:, 0]] // size
        rows = [(int(s) * size, min((int(s) + 1) * size, end)) for s in shards]
        return self.sources.held(rows, [(int(lo), int(hi)) for lo, hi in bounds], self._pool)

    @cached_property
    def _pool(self) -> Executor | None:
        """The processes that read windows, for this order's life; None: the loader's thread reads."""
        if not self.read_processes:
            return None
        pool = ProcessPoolExecutor(self.read_processes, mp_context=get_context("forkserver"))
        weakref.finalize(self, pool.shutdown, cancel_futures=True)
        return pool

"""Training minibatches: stored images seen through views, with the teacher's cached
outputs for exactly those views. The loader reads a cache; it never builds a teacher."""
from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from functools import cached_property
from multiprocessing import get_context
from typing import NamedTuple

import numpy as np
import torch

from cache.reader import QuantizedVectors, TeacherCache, TopKLogits
from cache.storage.rows import HeldRows, Rows, Span
from pipeline.data.imagestore import Images, ImageStore, pixels
from pipeline.runtime.device import to_device
from pipeline.training.distributed import Ranks
from pipeline.views.records import (
    CROP_AND_FLIP,
    Partners,
    Recipe,
    image_rows,
    partner_rows,
    partner_weight,
    random_views,
    render,
    whole_views,
)


class Batch(NamedTuple):
    images: torch.Tensor                    # float (B, 3, H, W) in [0, 1]
    labels: torch.Tensor                    # int64 (B,), or float (B, C) label distributions of mixed images
    teacher_logits: torch.Tensor | None     # float16 (B, C) as cached, float32 rebuilt from top-k
    teacher_features: torch.Tensor | None   # float16 (B, D) as cached, float32 from int8; None without
    weight: float = 1.0                     # of its mean loss: a rank's share of the global batch (Ranks.share)


ORDERS = ("random", "shards")  # [train] order
_SHARDS = 1  # names the shards order's own generator of an epoch: [seed, epoch, _SHARDS]
Outputs = Rows | HeldRows | TopKLogits | QuantizedVectors  # cached teacher outputs as read


class Arrays(NamedTuple):
    """What batches read: images by store row; the cached view boxes, logits and features
    by training position (replayed views) or by store row (the eval view); None where absent."""
    images: Images
    params: Outputs | None
    logits: Outputs | None
    features: Outputs | None

    def held(self, rows: list[Span], positions: list[Span], replay: bool, pool: Executor | None) -> Arrays:
        """These arrays' rows of store rows `rows` (whole shards) and training `positions` in memory
        (Rows.held); the images, one chunk each and the bulk of the reading, by `pool` if given."""
        teacher = positions if replay else rows
        return Arrays(self.images.held(rows, pool), *(None if a is None else a.held(by)
                                                      for a, by in ((self.params, positions), (self.logits, teacher),
                                                                    (self.features, teacher))))


class Window(NamedTuple):
    positions: np.ndarray            # training positions, in the order they are served
    arrays: Callable[[], Arrays]     # what their batches read; called at the window's first batch


def _cat(parts: list[Batch]) -> Batch:
    """One batch of consecutive parts (the weight is set by the caller)."""
    if len(parts) == 1:
        return parts[0]
    return Batch(*(None if f[0] is None else torch.cat(f) for f in zip(*(part[:4] for part in parts))))


class TrainLoader:
    """Epoch e of a seeded run: a permutation of the training rows and, per image, a view.

    - with a cache of V views: view (seed, e)-chosen among the V the teacher saw, its
      cached logits and features as targets;
    - with a cache of the eval view only: the whole image and its eval outputs;
    - without a cache (baseline): a fresh random view per (image, epoch) when `augment`,
      else the whole image.

    Random views are drawn by `recipe` (views.Recipe), which a replayed cache must have drawn
    its views by; a batch of mixed views carries mixed labels.

    `order` random: each epoch a permutation of all training rows, each batch read where
    it lies, in memory or on disk. `order` shards: each epoch the store's shards in a
    shuffled order, taken `window` at a time, the training rows of a window shuffled; a
    window's rows of the store and the cache are read whole, a shard at a time, and held
    only while its batches are made. Either way, the view (so the targets) of an (image,
    epoch) is the same: the shards order is a draw of its own.

    Batches are on `device`: the uint8 rows and cached outputs are copied there and the
    views rendered there. In a data-parallel job each batch is this rank's share of the
    global batch of `batch_size` (`ranks`); the order and views are every rank's.
    """

    def __init__(self, store: ImageStore, image_size: int, batch_size: int, seed: int,
                 cache: TeacherCache | None = None, augment: bool = True,
                 device: torch.device = torch.device("cpu"), ranks: Ranks = Ranks(),
                 order: str = "random", window: int = 1, read_processes: int = 0, recipe: Recipe = CROP_AND_FLIP):
        if order not in ORDERS or window < 1:
            raise ValueError(f"[train] order = {order!r}, order_window = {window}: use an order of "
                             f"{', '.join(ORDERS)} and a window of at least 1 shard")
        self.store, self.image_size, self.batch_size = store, image_size, batch_size
        self.seed, self.cache, self.augment, self.device, self.ranks = seed, cache, augment, device, ranks
        self.order, self.window, self.read_processes, self.recipe = order, window, read_processes, recipe
        self.rows = store.rows("train")
        self._partners = Partners(self.rows, store.images.shard_rows)
        self.arrays = self._whole()  # what batches read in random order
        shard_of = self.rows // store.images.shard_rows  # non-decreasing: rows are in store order
        self._shards = np.unique(shard_of)
        # Training positions lo:hi of each shard of self._shards.
        self._bounds = np.searchsorted(shard_of, np.stack([self._shards, self._shards + 1], axis=1))
        if cache is not None and cache.views and not np.array_equal(cache.aug_rows, self.rows):
            raise ValueError(f"teacher cache {cache.path} covers other training rows than "
                             f"image store {store.path}: rebuild the cache")
        if self._replay and (drawn := Recipe(**cache.attrs.get("recipe", {}))) != recipe:
            raise ValueError(f"teacher cache {cache.path} holds views drawn by {drawn}, not by this run's "
                             f"{recipe}: use a cache made for this recipe ([train]'s)")
        if 0 < min(batch_size, len(self.rows) % batch_size or batch_size) < ranks.world:
            raise ValueError(f"{ranks.world} processes need every batch of [train] batch_size = {batch_size} "
                             f"to hold at least {ranks.world} of the {len(self.rows)} training images "
                             "(the last batch holds the rest): change the batch size or the processes")

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """The batches of `epoch`, its training positions in the order of `positions(epoch)`."""
        order, views = self._draw(epoch)
        windows = [Window(order, lambda: self.arrays)] if self.order == "random" else self._windows(epoch)
        yield from self._batches(windows, views, epoch)

    def positions(self, epoch: int) -> np.ndarray:
        """Training positions (indices into the train split's rows) in the order `epoch` serves them."""
        if self.order == "random":
            return self._draw(epoch)[0]
        return np.concatenate([w.positions for w in self._windows(epoch)])

    def _draw(self, epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The random order of `epoch`, then the view of each training position: one draw,
        whichever order is served, so the views never depend on it."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.rows))
        return order, rng.integers(self.cache.views, size=len(self.rows)) if self._replay else None

    def _windows(self, epoch: int) -> list[Window]:
        """Shards order: the store's shards (those with training rows) shuffled, `window` at a
        time, the window's training positions shuffled; all from the epoch's own generator."""
        rng = np.random.default_rng([self.seed, epoch, _SHARDS])
        shards = rng.permutation(len(self._shards))
        windows = []
        for start in range(0, len(shards), self.window):
            bounds = self._bounds[np.sort(shards[start:start + self.window])]
            positions = rng.permutation(np.concatenate([np.arange(lo, hi) for lo, hi in bounds]))
            windows.append(Window(positions, lambda bounds=bounds: self._hold(bounds)))
        return windows

    def _hold(self, bounds: np.ndarray) -> Arrays:
        """The arrays of the training positions lo:hi of `bounds`, whole store shards, in memory."""
        size, end = self.store.images.shard_rows, len(self.store.labels)
        shards = self.rows[bounds[:, 0]] // size
        rows = [(int(s) * size, min((int(s) + 1) * size, end)) for s in shards]
        return self.arrays.held(rows, [(int(lo), int(hi)) for lo, hi in bounds], self._replay, self._pool)

    @cached_property
    def _pool(self) -> Executor | None:
        """The processes that read windows, for this loader's life; None: this thread reads."""
        if not self.read_processes:
            return None
        pool = ProcessPoolExecutor(self.read_processes, mp_context=get_context("forkserver"))
        weakref.finalize(self, pool.shutdown, cancel_futures=True)
        return pool

    def _batches(self, windows: list[Window], views: np.ndarray | None, epoch: int) -> Iterator[Batch]:
        """Batches of `batch_size` over the windows' positions one after another; a window's
        arrays are held from its first batch to its last (a batch may straddle two windows)."""
        order = np.concatenate([w.positions for w in windows])
        window_of = np.repeat(np.arange(len(windows)), [len(w.positions) for w in windows])
        held: dict[int, Arrays] = {}
        for start in range(0, len(order), self.batch_size):
            places, weight = self.ranks.share(np.arange(start, min(start + self.batch_size, len(order))))
            ks = window_of[places]
            held = {k: arrays for k, arrays in held.items() if k >= ks[0]}  # later batches lie in later windows
            parts = []
            for k in np.unique(ks).tolist():
                if k not in held:
                    held[k] = windows[k].arrays()
                pos = order[places[ks == k]]
                parts.append(self._batch(pos, None if views is None else views[pos], epoch, held[k]))
            yield _cat(parts)._replace(weight=weight)

    def _whole(self) -> Arrays:
        cache = self.cache
        if self._replay:
            return Arrays(self.store.images, cache.aug_params, cache.aug_logits, cache.aug_features)
        if cache is not None:
            return Arrays(self.store.images, None, cache.eval_logits, cache.eval_features)
        return Arrays(self.store.images, None, None, None)

    @property
    def _replay(self) -> bool:
        return self.cache is not None and self.cache.views > 0

    def _batch(self, pos: np.ndarray, view: np.ndarray | None, epoch: int, arrays: Arrays) -> Batch:
        rows, size = self.rows[pos], self.store.size
        teacher, recipe = None, self.recipe
        if self._replay:
            params = arrays.params.take(pos, view)
            teacher = [None if t is None else t.take(pos, view) for t in (arrays.logits, arrays.features)]
        elif self.cache is not None:
            params, recipe = whole_views(len(rows), size), CROP_AND_FLIP
            teacher = [None if t is None else t.take(rows) for t in (arrays.logits, arrays.features)]
        elif self.augment:
            keys = np.stack([rows, np.full_like(rows, epoch)], axis=1)
            params = random_views(self.seed, keys, 1, size, recipe, self._partners)[:, 0]
        else:
            params, recipe = whole_views(len(rows), size), CROP_AND_FLIP
        read, image_of, partner_of = image_rows(rows, partner_rows(params, recipe))
        images = render(pixels(arrays.images, read, self.device), params, self.image_size, image_of, recipe, partner_of)
        labels = self._on_device(self._labels(rows, params, recipe))
        if teacher is None:
            return Batch(images, labels, None, None)
        return Batch(images, labels, *map(self._on_device, teacher))

    def _labels(self, rows: np.ndarray, params: np.ndarray, recipe: Recipe) -> np.ndarray:
        """The labels of views `params` of store rows `rows`: class indices, or for a recipe
        that mixes, (B, C) float32 distributions, each image's class and its partner's
        weighed by their shares of the image (views.partner_weight)."""
        labels = self.store.labels[rows]
        if not recipe.mixes:
            return labels
        weight = partner_weight(params, recipe, self.image_size)
        mixed = np.zeros((len(rows), len(self.store.classes)), np.float32)
        np.add.at(mixed, (np.arange(len(rows)), labels), 1 - weight)
        np.add.at(mixed, (np.arange(len(rows)), self.store.labels[partner_rows(params, recipe)]), weight)
        return mixed

    def _on_device(self, array: np.ndarray | None) -> torch.Tensor | None:
        return None if array is None else to_device(torch.as_tensor(array), self.device)

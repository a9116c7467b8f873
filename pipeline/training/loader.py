"""Training minibatches: stored images seen through views, with the teacher's cached
outputs for exactly those views. The loader reads a cache; it never builds a teacher."""
from __future__ import annotations

import copy
import weakref
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from functools import cached_property
from itertools import groupby
from multiprocessing import get_context
from operator import itemgetter
from typing import NamedTuple

import numpy as np
import torch

from cache.reader import TeacherCache
from pipeline.data.imagestore import ImageStore, pixels
from pipeline.runtime.device import to_device
from pipeline.runtime.prefetch import ahead
from pipeline.training.distributed import Ranks
from pipeline.training.orders import (
    ORDERS,
    BatchSources,
    RandomOrder,
    ShardsOrder,
    Window,
    epoch_draw,
    resolved_order,
)
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


class Views(NamedTuple):
    """A batch part up to its rendering: the store rows its views crop, what they are (view i
    of pixels[image_of[i]], mixed with pixels[partner_of[i]] by `recipe`), its labels and its
    teacher targets as read."""
    pixels: torch.Tensor                    # uint8 (R, S, S, 3)
    params: np.ndarray                      # (B, recipe.width) view records
    image_of: np.ndarray
    partner_of: np.ndarray | None
    recipe: Recipe
    labels: np.ndarray
    teacher: list[np.ndarray | None]        # logits and features; None where absent


Part = tuple[np.ndarray, np.ndarray | None]  # training positions of one batch in one window, and their views


def check_replayable(cache: TeacherCache | None, store: ImageStore, recipe: Recipe) -> None:
    """Raise ValueError, naming the fix, where `cache` holds views a loader of `store` cannot
    replay with `recipe`: views of other training rows, or views drawn by another recipe.
    A cache of the eval view only (or none) has nothing to replay."""
    if cache is None or not cache.views:
        return
    if not np.array_equal(cache.aug_rows, store.rows("train")):
        raise ValueError(f"teacher cache {cache.path} covers other training rows than "
                         f"image store {store.path}: rebuild the cache")
    if (drawn := Recipe(**cache.attrs.get("recipe", {}))) != recipe:
        raise ValueError(f"teacher cache {cache.path} holds views drawn by {drawn}, not by this run's "
                         f"{recipe}: use a cache made for this recipe ([train]'s)")


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

    `order` (orders.py) random: each epoch a permutation of all training rows, each batch
    read where it lies, in memory or on disk. `order` shards: each epoch the store's shards
    in a shuffled order, taken `window` at a time, the training rows of a window shuffled; a
    window's rows of the store and the cache are read whole, a shard at a time, and held only
    while its batches are made. Either way, the view (so the targets) of an (image, epoch) is
    the same: the shards order is a draw of its own. `order` auto: shards where the store's
    decoded images exceed its memory budget, else random (orders.resolved_order).

    Batches are on `device`: the uint8 rows and cached outputs are copied there and the
    views rendered there. In shards order with `read_processes`, those processes make the
    windows' batch parts instead, that many windows at a time: they read, decode a jpeg
    store's images and, where `device` is the CPU, render; this thread joins their parts
    (and on another device renders them there).
    In a data-parallel job each batch is this rank's share of the global batch of
    `batch_size` (`ranks`); the order and views are every rank's.
    """

    def __init__(self, store: ImageStore, image_size: int, batch_size: int, seed: int,
                 cache: TeacherCache | None = None, augment: bool = True,
                 device: torch.device = torch.device("cpu"), ranks: Ranks = Ranks(),
                 order: str = "random", window: int = 1, read_processes: int = 0, recipe: Recipe = CROP_AND_FLIP):
        if order not in ORDERS or window < 1 or read_processes < 0:
            raise ValueError(f"[train] order = {order!r}, order_window = {window}, [compute] read_processes = "
                             f"{read_processes}: use an order of {', '.join(ORDERS)}, a window of at least 1 "
                             "shard and 0 or more processes")
        self.store, self.image_size, self.batch_size = store, image_size, batch_size
        self.seed, self.cache, self.augment, self.device, self.ranks = seed, cache, augment, device, ranks
        self.recipe, self.read_processes = recipe, read_processes
        self.order = resolved_order(order, int(np.prod(store.images.shape)), store.budget)  # random or shards
        self.rows = store.rows("train")
        self._partners = Partners(self.rows, store.images.shard_rows)
        sources = self._sources()
        check_replayable(cache, store, recipe)
        if 0 < min(batch_size, len(self.rows) % batch_size or batch_size) < ranks.world:
            raise ValueError(f"{ranks.world} processes need every batch of [train] batch_size = {batch_size} "
                             f"to hold at least {ranks.world} of the {len(self.rows)} training images "
                             "(the last batch holds the rest): change the batch size or the processes")
        self._order = (RandomOrder(seed, len(self.rows), sources) if self.order == "random"
                       else ShardsOrder(seed, store, self.rows, window, sources))

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """The batches of `epoch`, its training positions in the order of `positions(epoch)`;
        from batch `start` on (a resumed epoch's: what comes before is not read)."""
        views = self.draw(epoch)[1]
        yield from self._batches(self._order.windows(epoch), views, epoch, start)

    def positions(self, epoch: int) -> np.ndarray:
        """Training positions (indices into the train split's rows) in the order `epoch` serves them."""
        return np.concatenate([w.positions for w in self._order.windows(epoch)])

    def draw(self, epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The random order of `epoch`, then the view of each training position (orders.epoch_draw)."""
        return epoch_draw(self.seed, epoch, len(self.rows), self.cache.views if self._replay else 0)

    def _batches(self, windows: list[Window], views: np.ndarray | None, epoch: int, start: int) -> Iterator[Batch]:
        """Batches of `batch_size` over the windows' positions one after another, from batch
        `start` on, each joined from its parts in each window it straddles (`_made`); a window
        with none of them is not made."""
        order = np.concatenate([w.positions for w in windows])
        window_of = np.repeat(np.arange(len(windows)), [len(w.positions) for w in windows])
        weights: list[float] = []
        cuts: list[list[tuple[int, Part]]] = [[] for _ in windows]  # per window: (batch, its part there)
        for b, first in enumerate(range(0, len(order), self.batch_size)):
            places, weight = self.ranks.share(np.arange(first, min(first + self.batch_size, len(order))))
            weights.append(weight)
            if b < start:
                continue
            ks = window_of[places]
            for k in np.unique(ks).tolist():
                pos = order[places[ks == k]]
                cuts[k].append((b, (pos, None if views is None else views[pos])))
        kept = [(w, cut) for w, cut in zip(windows, cuts) if cut]
        made = self._made([(w, [part for _, part in cut], epoch) for w, cut in kept])
        numbered = ((b, part) for (_, cut), parts in zip(kept, made) for (b, _), part in zip(cut, parts))
        for b, group in groupby(numbered, key=itemgetter(0)):
            yield _cat([part for _, part in group])._replace(weight=weights[b])

    def _made(self, windows: list[tuple[Window, list[Part], int]]) -> Iterator[Iterable[Batch]]:
        """The batch parts of each window (`_parts`'s arguments), in order: made by the read
        processes, a few windows ahead, in shards order with some (rendered by them on the CPU,
        else here on the device); else by this thread."""
        if not (self.read_processes and isinstance(self._order, ShardsOrder)):
            return (self._parts(*window) for window in windows)
        on_cpu = self.device.type == "cpu"
        made = ahead(self._pool, _parts_in_process, [(*window, on_cpu) for window in windows], self.read_processes)
        if on_cpu:
            return made
        return ([self._rendered(v._replace(pixels=to_device(v.pixels, self.device))) for v in views]
                for views in made)

    def _parts(self, window: Window, parts: list[Part], epoch: int, render: bool = True) -> Iterator[Batch | Views]:
        """The batch `parts` of `window`, rendered or up to their rendering, its sources held meanwhile."""
        sources = self._order.hold(window)
        for pos, view in parts:
            views = self._views(pos, view, epoch, sources)
            yield self._rendered(views) if render else views

    @cached_property
    def _pool(self) -> Executor:
        """The read processes, for this loader's life; each gets a copy of it that works on the CPU."""
        on_cpu = copy.copy(self)  # taken before the pool is set: it holds none
        on_cpu.device = torch.device("cpu")
        context = get_context("forkserver")
        context.set_forkserver_preload([__name__])  # each process forks with torch imported, where a server starts
        pool = ProcessPoolExecutor(self.read_processes, mp_context=context,
                                   initializer=_start_reading, initargs=(on_cpu,))
        weakref.finalize(self, pool.shutdown, cancel_futures=True)
        return pool

    def _sources(self) -> BatchSources:
        """What batches read where it lies: the store's images and the cache's outputs for this run."""
        cache = self.cache
        if self._replay:
            return BatchSources(self.store.images, cache.aug_params, cache.aug_logits, cache.aug_features)
        if cache is not None:
            return BatchSources(self.store.images, None, cache.eval_logits, cache.eval_features)
        return BatchSources(self.store.images, None, None, None)

    @property
    def _replay(self) -> bool:
        return self.cache is not None and self.cache.views > 0

    def _views(self, pos: np.ndarray, view: np.ndarray | None, epoch: int, sources: BatchSources) -> Views:
        """The batch part of training positions `pos` (`view`: their cached views, if replayed)
        up to its rendering, its pixels on the device."""
        rows, size = self.rows[pos], self.store.size
        teacher, recipe = [None, None], self.recipe
        if self._replay:
            params = sources.params.take(pos, view)
            teacher = [None if t is None else t.take(pos, view) for t in (sources.logits, sources.features)]
        elif self.cache is not None:
            params, recipe = whole_views(len(rows), size), CROP_AND_FLIP
            teacher = [None if t is None else t.take(rows) for t in (sources.logits, sources.features)]
        elif self.augment:
            keys = np.stack([rows, np.full_like(rows, epoch)], axis=1)
            params = random_views(self.seed, keys, 1, size, recipe, self._partners)[:, 0]
        else:
            params, recipe = whole_views(len(rows), size), CROP_AND_FLIP
        read, image_of, partner_of = image_rows(rows, partner_rows(params, recipe))
        return Views(pixels(sources.images, read, self.device), params, image_of, partner_of, recipe,
                     self._labels(rows, params, recipe), teacher)

    def _rendered(self, views: Views) -> Batch:
        """The batch part of `views`, rendered where its pixels are, its labels and targets on the device."""
        images = render(views.pixels, views.params, self.image_size, views.image_of, views.recipe, views.partner_of)
        return Batch(images, *map(self._on_device, [views.labels, *views.teacher]))

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


_LOADER: TrainLoader | None = None  # in a read process: its copy of the loader whose windows it makes


def _start_reading(loader: TrainLoader) -> None:
    """A read process's start: the loader it makes windows for, one torch thread (the
    processes share the cores)."""
    global _LOADER
    torch.set_num_threads(1)
    _LOADER = loader


def _parts_in_process(window: Window, parts: list[Part], epoch: int, render: bool) -> list[Batch] | list[Views]:
    """TrainLoader._parts in a read process (whose loader is on the CPU)."""
    return list(_LOADER._parts(window, parts, epoch, render))

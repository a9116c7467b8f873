"""Training minibatches: stored images seen through views, with the teacher's cached
outputs for exactly those views. The loader reads a cache; it never builds a teacher."""
from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from cache.reader import TeacherCache
from pipeline.data.imagestore import ImageStore, pixels
from pipeline.device import to_device
from pipeline.training.distributed import Ranks
from pipeline.views import random_views, render, whole_views


class Batch(NamedTuple):
    images: torch.Tensor                    # float (B, 3, H, W) in [0, 1]
    labels: torch.Tensor                    # int64 (B,)
    teacher_logits: torch.Tensor | None     # float16 (B, C) as cached, float32 rebuilt from top-k
    teacher_features: torch.Tensor | None   # float16 (B, D) as cached, float32 from int8; None without
    weight: float = 1.0                     # of its mean loss: a rank's share of the global batch (Ranks.share)


class TrainLoader:
    """Epoch e of a seeded run: a permutation of the training rows and, per image, a view.

    - with a cache of V views: view (seed, e)-chosen among the V the teacher saw, its
      cached logits and features as targets;
    - with a cache of the eval view only: the whole image and its eval outputs;
    - without a cache (baseline): a fresh random view per (image, epoch) when `augment`,
      else the whole image.

    Batches are on `device`: the uint8 rows and cached outputs are copied there and the
    views rendered there. In a data-parallel job each batch is this rank's share of the
    global batch of `batch_size` (`ranks`); the order and views are every rank's.
    """

    def __init__(self, store: ImageStore, image_size: int, batch_size: int, seed: int,
                 cache: TeacherCache | None = None, augment: bool = True,
                 device: torch.device = torch.device("cpu"), ranks: Ranks = Ranks()):
        self.store, self.image_size, self.batch_size = store, image_size, batch_size
        self.seed, self.cache, self.augment, self.device, self.ranks = seed, cache, augment, device, ranks
        self.rows = store.rows("train")
        if cache is not None and cache.views and not np.array_equal(cache.aug_rows, self.rows):
            raise ValueError(f"teacher cache {cache.path} covers other training rows than "
                             f"image store {store.path}: rebuild the cache")
        if 0 < min(batch_size, len(self.rows) % batch_size or batch_size) < ranks.world:
            raise ValueError(f"{ranks.world} processes need every batch of [train] batch_size = {batch_size} "
                             f"to hold at least {ranks.world} of the {len(self.rows)} training images "
                             "(the last batch holds the rest): change the batch size or the processes")

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.rows))
        views = rng.integers(self.cache.views, size=len(self.rows)) if self._replay else None
        for start in range(0, len(order), self.batch_size):
            pos, weight = self.ranks.share(order[start:start + self.batch_size])
            yield self._batch(pos, None if views is None else views[pos], epoch)._replace(weight=weight)

    @property
    def _replay(self) -> bool:
        return self.cache is not None and self.cache.views > 0

    def _batch(self, pos: np.ndarray, view: np.ndarray | None, epoch: int) -> Batch:
        rows, size = self.rows[pos], self.store.size
        teacher = None
        if self._replay:
            params = self.cache.aug_params.take(pos, view)
            teacher = [self.cache.aug_logits, self.cache.aug_features]
            teacher = [None if t is None else t.take(pos, view) for t in teacher]
        elif self.cache is not None:
            params = whole_views(len(rows), size)
            teacher = [None if t is None else t[rows] for t in (self.cache.eval_logits, self.cache.eval_features)]
        elif self.augment:
            keys = np.stack([rows, np.full_like(rows, epoch)], axis=1)
            params = random_views(self.seed, keys, 1, size)[:, 0]
        else:
            params = whole_views(len(rows), size)
        images = render(pixels(self.store.images, rows, self.device), params, self.image_size)
        labels = self._on_device(self.store.labels[rows])
        if teacher is None:
            return Batch(images, labels, None, None)
        return Batch(images, labels, *map(self._on_device, teacher))

    def _on_device(self, array: np.ndarray | None) -> torch.Tensor | None:
        return None if array is None else to_device(torch.as_tensor(array), self.device)

"""The teacher cache in any training script: a finished image store and its teacher cache,
opened by data set name or by path; for each epoch the batches `TrainStudent` trains on in
`kd` mode (the views the teacher saw, with its outputs for exactly those views), for one
rank of a data-parallel job or for all; the test images; and the loss, a `torch.nn.Module`
for any model.

    import timm, torch
    from pipeline.api import DistillationLoss, open_cached

    data = open_cached("demo")    # as luigi.cfg names it; or open_cached(store=..., cache=...)
    model = timm.create_model("resnet18", num_classes=len(data.classes))
    loss_fn = DistillationLoss(alpha=0.7, temperature=4.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for epoch in range(3):
        for batch in data.batches(epoch, batch_size=64):
            loss = loss_fn(model(batch.images), batch.labels, batch.teacher_logits)
            opt.zero_grad(); loss.backward(); opt.step()

Everything here is the project's own path, not a copy of it: `TrainStudent` trains from the
same loader (pipeline.training.loader.TrainLoader) and the same loss.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from cache.reader import TeacherCache
from cache.storage.rows import DEFAULT_BUDGET
from pipeline.data.imagestore import ImageStore
from pipeline.inference import view_batches
from pipeline.training.distributed import Ranks
from pipeline.training.loader import Batch, TrainLoader
from pipeline.training.losses import DistillationLoss
from pipeline.views.records import Recipe, whole_views

__all__ = ["Batch", "Cached", "DistillationLoss", "open_cached"]


@dataclass(frozen=True)
class Cached:
    """A finished image store and, if opened with one, its teacher cache."""

    store: ImageStore
    cache: TeacherCache | None

    @property
    def classes(self) -> list[str]:
        """The class names; a label is an index into them."""
        return self.store.classes

    @property
    def temperature(self) -> float | None:
        """The temperature its teacher targets are exact at, where the cache kept a tail at
        the distillation temperature or sampled it there: give the loss this one. None where
        any temperature does (every logit, or a flat tail: exact at 1 only, as always)."""
        if self.cache is None:
            return None
        logits = self.cache.eval_logits
        return logits.temperature if getattr(logits, "temperature", 1.0) != 1.0 else None

    @property
    def image_size(self) -> int:
        """The stored images' side, the default side of the rendered views."""
        return self.store.size

    def batches(self, epoch: int, batch_size: int, *, seed: int = 0, image_size: int | None = None,
                teacher: bool = True, device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1,
                order: str = "auto") -> Iterator[Batch]:
        """The training batches of `epoch` (from 0): a seeded permutation of the train split,
        each image seen through one view. With the cache and `teacher`, the view is one the
        teacher saw and the batch carries the teacher's logits (float32, every class; rebuilt
        from the top k where the cache keeps those) and features (None where the cache has
        none); without, a fresh random view and no teacher outputs (a baseline). Views are
        drawn by the recipe the cache's views were (crops, flips, RandAugment, mixup: mixed
        images carry (B, C) label distributions). On `device`, float images in [0, 1] of
        `image_size` (default the store's). Rank `rank` of `world_size` gets its share of
        each batch of `batch_size`, in the order every rank walks; `Batch.weight` is the share
        of its mean loss that makes the ranks' average the batch's mean. `order`: random,
        shards (a store far larger than memory, read a shard at a time) or auto."""
        return self.loader(batch_size, seed=seed, image_size=image_size, teacher=teacher, device=device,
                           rank=rank, world_size=world_size, order=order).epoch(epoch)

    def loader(self, batch_size: int, *, seed: int = 0, image_size: int | None = None, teacher: bool = True,
               device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1,
               order: str = "auto") -> TrainLoader:
        """The loader `batches` walks (`loader.epoch(e)`; `len(loader)` batches an epoch):
        built once, for a loop that asks for many epochs."""
        cache = self.cache if teacher else None
        recipe = Recipe(**self.cache.attrs.get("recipe", {})) if self.cache is not None else Recipe()
        return TrainLoader(self.store, image_size or self.image_size, batch_size, seed, cache,
                           device=torch.device(device), ranks=Ranks(rank, world_size), order=order, recipe=recipe)

    def eval_batches(self, split: str = "test", batch_size: int = 256, *, image_size: int | None = None,
                     device: str | torch.device = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) of a split (train, val or test) in store order, each image whole
        and unflipped (the view every result is scored on), on `device`."""
        rows = self.store.rows(split)
        views = whole_views(len(rows), self.store.size)[:, None]
        labels = torch.as_tensor(self.store.labels[rows])
        start = 0
        for images in view_batches(self.store.images, rows, views, image_size or self.image_size, batch_size,
                                   torch.device(device)):
            yield images, labels[start:start + len(images)].to(images.device)
            start += len(images)


def open_cached(dataset: str | None = None, *, store: str | Path | None = None, cache: str | Path | None = None,
                memory_budget_gb: float | None = None) -> Cached:
    """The finished store and teacher cache of `dataset` (a [datasets] name of luigi.cfg,
    which finds them as the tasks do: the outputs of `luigi --module tasks CacheTeacher
    --dataset NAME`), or those at the paths `store` and `cache` (a store alone: no teacher
    outputs). Images and outputs are held in memory within `memory_budget_gb` (the
    [compute] setting by name, else 2 GiB) and read from disk beyond it. Raises
    FileNotFoundError naming what is not finished and the command that makes it, and
    cache.reader.CacheMismatch for a cache made from another store."""
    if (dataset is None) == (store is None):
        raise ValueError("open_cached: give a data set name or a store path (and a cache path), not both")
    if dataset is not None:
        from tasks.outputs import finished_outputs  # luigi.cfg is the tasks' to read; by path, no Luigi
        store, cache, budget = finished_outputs(dataset)
    else:
        budget = DEFAULT_BUDGET
    if memory_budget_gb is not None:
        budget = int(memory_budget_gb * (1 << 30))
    image_store = ImageStore(store, budget)
    teacher_cache = None if cache is None else TeacherCache(cache, budget)
    if teacher_cache is not None and (fingerprint := image_store.manifest.get("fingerprint")):
        teacher_cache.check({"store": fingerprint})  # CacheMismatch: made from another store
    return Cached(image_store, teacher_cache)

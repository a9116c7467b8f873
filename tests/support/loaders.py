"""Training loaders over the tiny data set and what an epoch serves, to compare orders,
budgets and processes."""
from __future__ import annotations

import torch

from cache.reader import TeacherCache
from pipeline.data.imagestore import ImageStore
from pipeline.training.loader import TrainLoader

BATCH, WINDOW = 5, 2  # 5 does not divide a window: batches straddle windows


def loader(store_path, cache_path, budget: int, order: str, **kwargs) -> TrainLoader:
    cache = cache_path and TeacherCache(cache_path, budget)
    return TrainLoader(ImageStore(store_path, budget), 32, BATCH, seed=0, cache=cache, order=order,
                       **{"window": WINDOW, **kwargs})


def served(train: TrainLoader, epoch: int) -> dict[int, tuple]:
    """What the epoch serves each training position: image, label, teacher logits and features."""
    batches = list(train.epoch(epoch))
    fields = [None if f[0] is None else torch.cat(f) for f in zip(*(b[:4] for b in batches))]
    positions = train.positions(epoch)
    assert [len(b.labels) for b in batches] == [len(positions[i:i + BATCH]) for i in range(0, len(positions), BATCH)]
    return {int(p): tuple(None if f is None else f[i] for f in fields) for i, p in enumerate(positions)}


def assert_same(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for p, row in expected.items():
        for a, b in zip(got[p], row):
            assert (a is None and b is None) or torch.equal(a, b), p


def assert_same_batches(got: list, expected: list) -> None:
    """Batch for batch, the same tensors and weights."""
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.weight == b.weight
        assert all((x is None and y is None) or torch.equal(x, y) for x, y in zip(a[:4], b[:4]))

"""Moving a seeded, stratified fraction of a data set's items from one split to another."""
from __future__ import annotations

import random

import numpy as np

from pipeline.data.source import SPLITS, Items


def move_fraction(items: Items, source: str, target: str, fraction: float, seed: int) -> Items:
    """`items` with round(fraction * n) of each class's n `source` items, at most n - 1, moved to
    `target`: a per-class seeded sample of the sorted ids, so independent of the input order."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    rows = np.flatnonzero(items.splits == SPLITS.index(source))
    rows = rows[np.argsort(items.labels[rows], kind="stable")]
    labels, starts = np.unique(items.labels[rows], return_index=True)
    moved: list[int] = []
    for label, group in zip(labels.tolist(), np.split(rows, starts[1:])):
        ids = items.ids[group].tolist()
        row_of = dict(zip(ids, group.tolist()))
        chosen = random.Random(f"{seed}:{label}")  # str seeds are stable
        moved += [row_of[i] for i in chosen.sample(sorted(ids), moved_count(len(ids), fraction))]
    return items.moved(np.array(moved, dtype=np.int64), target)


def moved_count(n: int, fraction: float) -> int:
    """How many of a class's n items move_fraction moves."""
    return min(round(fraction * n), n - 1)

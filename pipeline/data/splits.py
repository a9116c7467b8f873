"""Moving a seeded, stratified fraction of a data set's items from one split to another."""
from __future__ import annotations

import random
from collections import defaultdict

from pipeline.data.source import Item


def move_fraction(items: list[Item], source: str, target: str, fraction: float, seed: int) -> list[Item]:
    """`items` with round(fraction * n) of each class's n `source` items, at most n - 1, moved to
    `target`: a per-class seeded sample of the sorted ids, so independent of the input order."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    by_label: dict[int, list[str]] = defaultdict(list)
    for item in items:
        if item.split == source:
            by_label[item.label].append(item.id)
    moved = set()
    for label, ids in by_label.items():
        k = moved_count(len(ids), fraction)
        moved.update(random.Random(f"{seed}:{label}").sample(sorted(ids), k))  # str seeds are stable
    return [Item(item.id, item.label, target, item.key) if item.id in moved else item for item in items]


def moved_count(n: int, fraction: float) -> int:
    """How many of a class's n items move_fraction moves."""
    return min(round(fraction * n), n - 1)

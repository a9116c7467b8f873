"""`open_source`, which picks a data set reader from a spec string, and what every source's items
go through before they are stored: `carve_validation` and `shuffled_order`.

The readers (stanford40, imagefolder, hdf5 and synthetic) keep only paths and options (so they
pickle cheaply for dask workers), list their items by reading the data set's own index files,
and decode one image per `load`.
"""
from __future__ import annotations

import inspect
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.hdf5 import HDF5Source
from pipeline.data.imagefolder import ImageFolder
from pipeline.data.source import SPLITS, BadSource, Items, Source
from pipeline.data.splits import move_fraction
from pipeline.data.stanford40 import Stanford40

_PATH_KINDS = {"stanford40": Stanford40, "imagefolder": ImageFolder, "hdf5": HDF5Source}


def open_source(spec: str, **options: Any) -> Source:
    """The source named by `spec`: "synthetic", "stanford40:PATH", "imagefolder:PATH" or
    "hdf5:FILE". `options` are keyword arguments of that source's class; an unknown kind,
    a missing path or an unknown option raises BadSource."""
    kind, _, path = spec.partition(":")
    valid = "valid kinds: synthetic, stanford40:PATH, imagefolder:PATH, hdf5:FILE"
    if kind == "synthetic" and not path:
        from pipeline.data.synthetic import SyntheticSource  # lazy: only this kind needs the renderer
        cls, args = SyntheticSource, []
    elif kind in _PATH_KINDS:
        cls, args = _PATH_KINDS[kind], [Path(path).expanduser()]
        if not path or not args[0].exists():
            raise BadSource(f"source {spec!r}: {kind} needs an existing path after the colon ({valid})")
    else:
        raise BadSource(f"unknown source {spec!r} ({valid})")
    accepted = list(inspect.signature(cls).parameters)[len(args):]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise BadSource(f"source {spec!r}: unknown option(s) {', '.join(unknown)}; "
                        f"{kind} accepts: {', '.join(accepted)}")
    return cls(*args, **options)


def split_counts(source: Source) -> Counter[tuple[str, int]]:
    """Images per (split, label) of `source`, as its items have them: what the configuration
    check judges a data set by. An image folder counts its files without making its items,
    a million at ImageNet's size."""
    if isinstance(source, ImageFolder):
        return source.split_counts()
    items = source.items()
    return Counter(zip((SPLITS[s] for s in items.splits.tolist()), items.labels.tolist()))


def carve_validation(items: Items, fraction: float, seed: int) -> Items:
    """`items` with a seeded, stratified `fraction` of each class's train items moved to "val".

    Unchanged when `fraction` is 0 or when some items already are "val". Each class keeps at
    least one train item. The result depends only on the item ids, labels and `seed`, not on
    the input order, which it preserves."""
    if (items.splits == SPLITS.index("val")).any():
        return items
    return move_fraction(items, "train", "val", fraction, seed)


def shuffled_order(count: int, seed: int) -> np.ndarray:
    """A seeded random order of `count` items, the rows of a shuffled store: neighbouring rows
    are then of any class, which reading the store a few shards at a time needs. An order,
    not the items reordered: a store build gathers each shard's items, and never holds a
    second copy of a million ids."""
    return np.random.default_rng([seed, 1]).permutation(count)

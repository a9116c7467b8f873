"""Layout of the teacher cache (one Zarr v3 group per data set and teacher).

    eval/logits    float16 (N, C)      deterministic whole-image view, every split
    eval/features  float16 (N, D)      pooled pre-logit features of that view
    eval/stages/k  float16 (N, Ck, Hk, Wk)  feature maps of stage k of that view (optional)
    aug/rows       int64   (T,)        image-store row of each training image
    aug/params     float32 (T, V, 5)   view boxes (y, x, h, w) in store pixels + flip
    aug/logits     float16 (T, V, C)
    aug/features   float16 (T, V, D)
    attrs          identity (what the outputs depend on), classes, versions

A shard holds `shard_rows` images in every array: one shard is one writer's unit of
work. Chunks inside a shard hold about CHUNK_ROWS outputs (fewer images when each has
V views): one chunk is one small read. Every chunk carries a crc32c checksum
(cache/integrity.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from cache.integrity import CHECKSUMMED

FORMAT_VERSION = 2  # 2: crc32c on every chunk
CHUNK_ROWS = 64


def _array(group: zarr.Group, name: str, shape: tuple, dtype: str, shard_rows: int, views: int = 1) -> None:
    if name in group:
        return
    rows = _chunk_rows(shard_rows, views)
    group.create_array(name, shape=shape, dtype=dtype, chunks=(rows, *shape[1:]),
                       shards=(shard_rows, *shape[1:]), fill_value=0, **CHECKSUMMED)


def _chunk_rows(shard_rows: int, views: int) -> int:
    # Zarr needs whole chunks in a shard: the largest divisor of shard_rows near the target.
    target = min(max(1, CHUNK_ROWS // views), shard_rows)
    return max(d for d in range(1, target + 1) if shard_rows % d == 0)


def create_cache(path: str | Path, n: int, train_rows: np.ndarray, views: int, classes: int,
                 dim: int, shard_rows: int, attrs: dict, stage_shapes: dict | None = None) -> zarr.Group:
    """Create (or reopen, to resume) the cache's arrays; attrs are set once.
    `stage_shapes` maps a stage index to the (C, H, W) of its feature maps."""
    group = zarr.open_group(str(path), mode="a")
    t = len(train_rows)
    _array(group, "eval/logits", (n, classes), "float16", shard_rows)
    _array(group, "eval/features", (n, dim), "float16", shard_rows)
    for stage, shape in (stage_shapes or {}).items():
        _array(group, f"eval/stages/{stage}", (n, *shape), "float16", shard_rows)
    if views:
        # Rewritten on every open: a rebuild after damage (cache/integrity.py) may have deleted its chunk.
        group.create_array("aug/rows", data=np.asarray(train_rows, dtype="int64"), overwrite=True, **CHECKSUMMED)
        _array(group, "aug/params", (t, views, 5), "float32", shard_rows, views)
        _array(group, "aug/logits", (t, views, classes), "float16", shard_rows, views)
        _array(group, "aug/features", (t, views, dim), "float16", shard_rows, views)
    if "identity" not in group.attrs:
        group.attrs.update({**attrs, "format_version": FORMAT_VERSION})
    return group

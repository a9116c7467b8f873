"""Layout of the teacher cache (one Zarr v3 group per data set and teacher).

    eval/logits    float16 (N, C)      deterministic whole-image view, every split
    eval/features  float16 (N, D)      pooled pre-logit features of that view
    eval/stages/k  float16 (N, Ck, Hk, Wk)  feature maps of stage k of that view (optional)
    aug/rows       int64   (T,)        image-store row of each training image
    aug/params     float32 (T, V, 5)   view boxes (y, x, h, w) in store pixels + flip
    aug/logits     float16 (T, V, C)
    aug/features   float16 (T, V, D)
    attrs          identity (what the outputs depend on), classes, versions

Rows are chunked in small runs inside larger shards: one shard is one writer's
unit of work, one chunk is one read.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

FORMAT_VERSION = 1
CHUNK_ROWS = 64


def _array(group: zarr.Group, name: str, shape: tuple, dtype: str, shard_rows: int) -> None:
    if name in group:
        return
    rows = min(CHUNK_ROWS, shard_rows)
    group.create_array(name, shape=shape, dtype=dtype, chunks=(rows, *shape[1:]),
                       shards=(shard_rows, *shape[1:]), fill_value=0)


def aug_shard_rows(shard_rows: int, views: int) -> int:
    """Training images per aug shard: about as many (image, view) pairs as an eval shard has rows."""
    return max(1, shard_rows // max(1, views))


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
        if "aug/rows" not in group:
            group.create_array("aug/rows", data=np.asarray(train_rows, dtype="int64"))
        rows = aug_shard_rows(shard_rows, views)
        _array(group, "aug/params", (t, views, 5), "float32", rows)
        _array(group, "aug/logits", (t, views, classes), "float16", rows)
        _array(group, "aug/features", (t, views, dim), "float16", rows)
    if "identity" not in group.attrs:
        group.attrs.update({**attrs, "format_version": FORMAT_VERSION})
    return group

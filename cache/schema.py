"""Layout of the teacher cache (one Zarr v3 group per data set and teacher).

    eval/logits    float16 (N, C)      deterministic whole-image view, every split
    eval/features  float16 (N, D)      pooled pre-logit features of that view
    eval/stages/k  float16 (N, Ck, Hk, Wk)  feature maps of stage k of that view (optional)
    aug/rows       int64   (T,)        image-store row of each training image
    aug/params     float32 (T, V, R)   view records (pipeline/views/records.py): crop box (y, x, h, w)
                                       in store pixels and flip (R = 5), and the recipe's
                                       RandAugment operations and mixing partner
    aug/logits     float16 (T, V, C)
    aug/features   float16 (T, V, D)
    attrs          identity (what the outputs depend on), classes, versions

With [teacher] topk = K, each split keeps its top-k logits instead of `logits`:
    topk_values float16 (..., K), topk_indices uint8/16/32 (..., K), tail_logsumexp float16 (...)
With [teacher] feature_dtype = int8, `features` and `stages/k` are int8 codes, each with
`<name>_scales` float16 (one per vector: (N,), (T, V), (N, Ck)); int4 the same, the codes
packed two to a byte (uint8, last axis halved; its length in the array's attributes);
with none, neither is kept. cache/compact.py has both
encodings; `encode_outputs` is the one place that names the arrays.

A shard holds `shard_rows` images in every array: one shard is one writer's unit of
work. Chunks inside a shard hold about CHUNK_ROWS outputs (fewer images when each has
V views): one chunk is one small read. Every chunk carries a crc32c checksum
(cache/storage/integrity.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from cache.compact import quantize, topk_encode
from cache.storage.integrity import CHECKSUMMED

FORMAT_VERSION = 3  # 2: crc32c on every chunk; 3: top-k logits and int8 features as options
CHUNK_ROWS = 64


def _array(group: zarr.Group, name: str, shape: tuple, dtype: str | np.dtype, shard_rows: int, views: int = 1,
           attributes: dict | None = None) -> None:
    if name in group:
        return
    rows = _chunk_rows(shard_rows, views)
    group.create_array(name, shape=shape, dtype=dtype, chunks=(rows, *shape[1:]),
                       shards=(shard_rows, *shape[1:]), fill_value=0, attributes=attributes, **CHECKSUMMED)


def _chunk_rows(shard_rows: int, views: int) -> int:
    # Zarr needs whole chunks in a shard: the largest divisor of shard_rows near the target.
    target = min(max(1, CHUNK_ROWS // views), shard_rows)
    return max(d for d in range(1, target + 1) if shard_rows % d == 0)


def encode_outputs(logits: np.ndarray, features: np.ndarray, maps: dict[int, np.ndarray], topk: int,
                   feature_dtype: str) -> dict[str, np.ndarray]:
    """The arrays one split (eval/ or aug/) stores, by name, for float32 teacher outputs with
    any leading dimensions: logits (..., C), features (..., D), stage maps (..., Ck, Hk, Wk)."""
    out = {}
    if topk:
        out["topk_values"], out["topk_indices"], out["tail_logsumexp"] = topk_encode(logits, topk)
    else:
        out["logits"] = logits.astype(np.float16)
    out.update(_vectors("features", features, 1, feature_dtype))
    for stage, stage_maps in maps.items():
        out.update(_vectors(f"stages/{stage}", stage_maps, 2, feature_dtype))  # one vector per channel
    return out


def _attributes(name: str, classes: int, unpacked: dict[str, int]) -> dict | None:
    # Top-k indices say how many classes the logits they rebuild have; packed int4 codes
    # how long their last axis was.
    if name == "topk_indices":
        return {"classes": classes}
    return {"length": unpacked[name]} if name in unpacked else None


def _vectors(name: str, x: np.ndarray, vector_dims: int, dtype: str) -> dict[str, np.ndarray]:
    if dtype == "none":
        return {}
    if dtype == "float16":
        return {name: x.astype(np.float16)}
    codes, scales = quantize(x, dtype, vector_dims)
    return {name: codes, f"{name}_scales": scales}


def create_cache(path: str | Path, n: int, train_rows: np.ndarray, views: int, classes: int,
                 dim: int, shard_rows: int, attrs: dict, stage_shapes: dict | None = None,
                 topk: int = 0, feature_dtype: str = "float16", record_width: int = 5) -> zarr.Group:
    """Create (or reopen, to resume) the cache's arrays; attrs are set once.
    `stage_shapes` maps a stage index to the (C, H, W) of its feature maps; `record_width`
    is the numbers of a view's record."""
    group = zarr.open_group(str(path), mode="a")
    t = len(train_rows)
    maps = {stage: np.zeros((0, *shape), np.float32) for stage, shape in (stage_shapes or {}).items()}
    packed = {"features": dim, **{f"stages/{s}": shape[-1] for s, shape in (stage_shapes or {}).items()}
              } if feature_dtype == "int4" else {}
    for name, empty in encode_outputs(np.zeros((0, classes), np.float32), np.zeros((0, dim), np.float32),
                                      maps, topk, feature_dtype).items():
        _array(group, f"eval/{name}", (n, *empty.shape[1:]), empty.dtype, shard_rows,
               attributes=_attributes(name, classes, packed))
    if views:
        # Rewritten on every open: a rebuild after damage (cache/storage/integrity.py) may have deleted its chunk.
        group.create_array("aug/rows", data=np.asarray(train_rows, dtype="int64"), overwrite=True, **CHECKSUMMED)
        _array(group, "aug/params", (t, views, record_width), "float32", shard_rows, views)
        for name, empty in encode_outputs(np.zeros((0, views, classes), np.float32),
                                          np.zeros((0, views, dim), np.float32), {}, topk, feature_dtype).items():
            _array(group, f"aug/{name}", (t, *empty.shape[1:]), empty.dtype, shard_rows, views,
                   _attributes(name, classes, packed))
    if "identity" not in group.attrs:
        group.attrs.update({**attrs, "format_version": FORMAT_VERSION})
    return group

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
the tail's at the temperature in tail_logsumexp's attributes (1 unless `tail = tempered` or
`sampled`); with `tail = sampled` also sample_indices uint8/16/32 (..., S), S classes drawn
from the tail (with topk = 0 the tail is every class and the top-k arrays are absent).
With [teacher] logit_dtype = int8 or int4 (topk = 0), `logits` are codes with
`logits_scales` and `logits_offsets` float16 (...). With logit_dtype = head no logits are
kept: a view's logits are its features through the teacher's own classifier,
    head/weight    float32 (C, D)   head/bias  float32 (C,)
written once, so that the bytes a view grow with D, not with C. With [teacher] logit_rank = m
(topk = 0, logit_dtype float16, int8 or int4) each view keeps m numbers whatever C and D,
the coordinates of its features on the classifier's m leading directions, the first
k = [teacher] logit_lead of them (where the teacher's signal lies) as float16, the rest in
logit_dtype:
    logit_lead     float16 (..., k)   logit_coords (..., m - k) (int8 and int4 with
    `logit_coords_scales` float16 (...)), and once
    head/projection float32 (D, m)  head/weight float32 (C, m) (W P)  head/bias float32 (C,)
a view's logits [logit_lead, logit_coords] @ head/weight.T + head/bias (m = min(logit_rank,
C, D); either part absent where it would be empty).
cache/compact.py has the encodings.
With [teacher] feature_dtype = int8, `features` and `stages/k` are int8 codes, each with
`<name>_scales` float16 (one per vector: (N,), (T, V), (N, Ck)); int4 the same, the codes
packed two to a byte (uint8, last axis halved; its length in the array's attributes);
with none, neither is kept. `encode_outputs` is the one place that names the arrays.

A shard holds `shard_rows` images in every array: one shard is one writer's unit of
work. Chunks inside a shard hold about CHUNK_ROWS outputs (fewer images when each has
V views): one chunk is one small read. Every chunk carries a crc32c checksum
(cache/storage/integrity.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from cache.compact import classifier_basis, quantize, quantize_logits, sample_tail, topk_encode
from cache.storage.fingerprint import changed_settings
from cache.storage.integrity import CHECKSUMMED, read_all

FORMAT_VERSION = 3  # 2: crc32c on every chunk; 3: top-k logits and int8 features as options
CHUNK_ROWS = 64
TAILS = ("flat", "tempered", "sampled")
LOGIT_DTYPES = ("auto", "float16", "int8", "int4", "head")  # head: from the features; auto: by the classes
AUTO_RANK = 192  # logit_dtype = auto: the rank beyond which logits are kept in it, as int8 (docs/design.md)
LEAD = 16  # [teacher] logit_lead's default: a rank's leading coordinates kept as float16


@dataclass(frozen=True)
class LogitCoding:
    """How a cache stores each view's logits ([teacher] topk, tail, samples, logit_dtype;
    the tail's temperature is [kd]'s where the tail is tempered or sampled, else 1)."""
    topk: int = 0            # the K largest kept exactly; 0 = every logit, unless sampled
    tail: str = "flat"       # the rest as its mass at 1 spread flat, at `temperature`, or sampled
    samples: int = 0         # sampled: classes drawn from the tail per view
    dtype: str = "float16"   # every logit (topk = 0, tail not sampled): float16, int8, int4 or head
    temperature: float = 1.0
    rank: int = 0            # every logit as its features' coordinates on m classifier directions; 0: not so
    lead: int = 0            # of those, the first kept as float16, the rest as `dtype`

    @classmethod
    def of(cls, settings: dict, temperature: float, classes: int | None = None) -> LogitCoding:
        """The coding a cache's [teacher] keys ask for (topk, tail, samples, logit_dtype, logit_rank; those
        absent at their defaults), with those that do not apply at their defaults, so that
        they never tell two equal caches apart. logit_dtype auto: every logit as float16 where
        the data set's `classes` are at most the rank (logit_rank, or AUTO_RANK at 0) or not
        given, else int8 in that rank."""
        topk, tail = settings.get("topk", cls.topk), settings.get("tail", cls.tail)
        samples, dtype = settings.get("samples", cls.samples), settings.get("logit_dtype", cls.dtype)
        if tail == "sampled":
            return cls(topk, tail, samples, temperature=temperature)
        rank, lead = settings.get("logit_rank", cls.rank), settings.get("logit_lead", LEAD)
        if not topk and dtype == "auto":
            rank = rank or AUTO_RANK
            return cls(dtype="int8", rank=rank, lead=lead) if classes and classes > rank else cls()
        if not topk and rank and dtype != "head":
            return cls(dtype=dtype, rank=rank, lead=lead)
        if not topk:
            return cls(dtype=dtype)
        return cls(topk, tail, temperature=temperature if tail == "tempered" else 1.0)

    def identity(self) -> dict:
        """The settings beside topk a cache's identity holds: only those that differ from
        before they existed (top-k's flat tail, float16 logits), so older caches keep theirs."""
        now = {"tail": self.tail, "samples": self.samples, "logit_dtype": self.dtype,
               "tail_temperature": self.temperature, "logit_rank": self.rank, "logit_lead": self.lead}
        return changed_settings(now, {"tail": "flat", "samples": 0, "logit_dtype": "float16", "tail_temperature": 1.0,
                                      "logit_rank": 0, "logit_lead": 0})

    def describe(self, features: str = "float16") -> str:
        """For people: 'every class, int8', 'every class, int8 in rank 128, 16 float16', 'top-10, tail at T 4',
        'top-10 + 32 sampled at T 4', 'every class, head on int8 features' (`features`: their
        dtype, which only that one names)."""
        if self.from_features:
            return f"every class, head on {features} features"
        if self.projected:
            return f"every class, {self.dtype} in rank {self.rank}" + (f", {self.lead} float16" if self.lead else "")
        if self.dense:
            return f"every class, {self.dtype}"
        at = f" at T {self.temperature:g}"
        kept = f"top-{self.topk}" if self.topk else ""
        if self.sampled:
            return f"{kept + ' + ' if kept else ''}{self.samples} sampled{at}"
        return f"{kept}, {'flat tail' if self.tail == 'flat' else 'tail' + at}"

    @property
    def sampled(self) -> bool:
        return self.tail == "sampled"

    @property
    def dense(self) -> bool:
        """Every logit kept, as `dtype`."""
        return not self.topk and not self.sampled

    @property
    def from_features(self) -> bool:
        """No logits stored: the features through the teacher's classifier give every one."""
        return self.dense and self.dtype == "head"

    @property
    def projected(self) -> bool:
        """No logits stored: the features' coordinates on `rank` classifier directions give every one."""
        return self.dense and self.rank > 0

    @property
    def through_head(self) -> bool:
        """The logits are rebuilt by a classifier the cache keeps (head/): from the features or their coordinates."""
        return self.from_features or self.projected


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


def encode_outputs(logits: np.ndarray, features: np.ndarray, maps: dict[int, np.ndarray], coding: LogitCoding,
                   feature_dtype: str, uniforms: np.ndarray | None = None,
                   projection: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The arrays one split (eval/ or aug/) stores, by name, for float32 teacher outputs with
    any leading dimensions: logits (..., C), features (..., D), stage maps (..., Ck, Hk, Wk);
    `uniforms` (...) in [0, 1), one a view, draw a sampled tail's classes; `projection`
    (D, m), the cache's head/projection, gives a projected coding's coordinates."""
    if coding.projected:
        coords = features @ projection
        lead = min(coding.lead, coords.shape[-1])
        out = {"logit_lead": coords[..., :lead].astype(np.float16)} if lead else {}
        if coords.shape[-1] > lead:
            out.update(_vectors("logit_coords", coords[..., lead:], 1, coding.dtype))
    else:
        out = _logit_arrays(logits, coding, uniforms)
    out.update(_vectors("features", features, 1, feature_dtype))
    for stage, stage_maps in maps.items():
        out.update(_vectors(f"stages/{stage}", stage_maps, 2, feature_dtype))  # one vector per channel
    return out


def _logit_arrays(logits: np.ndarray, coding: LogitCoding, uniforms: np.ndarray | None) -> dict[str, np.ndarray]:
    if coding.from_features:
        return {}
    if coding.dense:
        if coding.dtype == "float16":
            return {"logits": logits.astype(np.float16)}
        codes, scales, offsets = quantize_logits(logits, coding.dtype)
        return {"logits": codes, "logits_scales": scales, "logits_offsets": offsets}
    values, indices, tail = topk_encode(logits, coding.topk, coding.temperature)
    out = {"topk_values": values, "topk_indices": indices} if coding.topk else {}
    out["tail_logsumexp"] = tail
    if coding.sampled:
        if uniforms is None:
            uniforms = np.zeros(logits.shape[:-1])  # an empty split: shapes only
        out["sample_indices"] = sample_tail(logits, indices, coding.temperature, uniforms, coding.samples)
    return out


def _attributes(name: str, classes: int, coding: LogitCoding, unpacked: dict[str, int]) -> dict | None:
    # Class indices say how many classes the logits they rebuild have, the tail its temperature;
    # packed int4 codes how long their last axis was.
    if name in ("topk_indices", "sample_indices"):
        return {"classes": classes}
    if name == "tail_logsumexp":
        return {"temperature": coding.temperature}
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
                 coding: LogitCoding = LogitCoding(), feature_dtype: str = "float16",
                 record_width: int = 5, head: tuple[np.ndarray, np.ndarray] | None = None) -> zarr.Group:
    """Create (or reopen, to resume) the cache's arrays; attrs are set once.
    `stage_shapes` maps a stage index to the (C, H, W) of its feature maps; `record_width`
    is the numbers of a view's record; `head` the teacher's classifier (weight (C, D), bias
    (C,)), which a coding through it needs."""
    group = zarr.open_group(str(path), mode="a")
    t = len(train_rows)
    if coding.through_head:
        _write_head(group, coding, head)
    projection = read_all(group["head/projection"]) if coding.projected else None
    maps = {stage: np.zeros((0, *shape), np.float32) for stage, shape in (stage_shapes or {}).items()}
    packed = {"features": dim, **{f"stages/{s}": shape[-1] for s, shape in (stage_shapes or {}).items()}
              } if feature_dtype == "int4" else {}
    if coding.dense and coding.dtype == "int4":
        packed.update({"logit_coords": projection.shape[1] - coding.lead} if coding.projected else {"logits": classes})
    for name, empty in encode_outputs(np.zeros((0, classes), np.float32), np.zeros((0, dim), np.float32),
                                      maps, coding, feature_dtype, projection=projection).items():
        _array(group, f"eval/{name}", (n, *empty.shape[1:]), empty.dtype, shard_rows,
               attributes=_attributes(name, classes, coding, packed))
    if views:
        # Rewritten on every open: a rebuild after damage (cache/storage/integrity.py) may have deleted its chunk.
        group.create_array("aug/rows", data=np.asarray(train_rows, dtype="int64"), overwrite=True, **CHECKSUMMED)
        _array(group, "aug/params", (t, views, record_width), "float32", shard_rows, views)
        for name, empty in encode_outputs(np.zeros((0, views, classes), np.float32),
                                          np.zeros((0, views, dim), np.float32), {}, coding, feature_dtype,
                                          projection=projection).items():
            _array(group, f"aug/{name}", (t, *empty.shape[1:]), empty.dtype, shard_rows, views,
                   _attributes(name, classes, coding, packed))
    if "identity" not in group.attrs:
        group.attrs.update({**attrs, "format_version": FORMAT_VERSION})
    return group


def _write_head(group: zarr.Group, coding: LogitCoding, head: tuple[np.ndarray, np.ndarray] | None) -> None:
    """head/ of a coding through the teacher's classifier; a resumed pass keeps the
    projection it started with, which another machine's SVD might sign otherwise."""
    if head is None:
        raise ValueError(f"{coding.describe()} keeps no logits: the cache needs the teacher's classifier")
    weight, bias = (np.asarray(value, dtype="float32") for value in head)
    if coding.projected:
        if "head/projection" not in group:
            group.create_array("head/projection", data=classifier_basis(weight, coding.rank), **CHECKSUMMED)
        weight = weight @ read_all(group["head/projection"])
    for name, value in (("weight", weight), ("bias", bias)):
        group.create_array(f"head/{name}", data=value, overwrite=True, **CHECKSUMMED)

"""The teacher cache as a student reads it."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import zarr

from cache.compact import dequantize, topk_decode
from cache.storage.blocks import read_manifest
from cache.storage.integrity import check_written, read_all
from cache.storage.rows import DEFAULT_BUDGET, Rows, Span


class TopKLogits:
    """Full float32 logits (..., C) of a top-k or sampled split, rebuilt on read
    (cache/compact.py topk_decode); read like Rows (a RowReader, cache/storage/rows.py).
    `parts`: tail, and values and indices (absent where no class is kept exactly), samples
    (a sampled tail's)."""

    def __init__(self, parts: dict[str, Rows], classes: int, temperature: float = 1.0):
        self.parts, self.classes, self.temperature = parts, classes, temperature
        self.shape = (*parts["tail"].shape, classes)

    @property
    def indices(self) -> Rows | None:
        """The classes kept exactly."""
        return self.parts.get("indices")

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        return self.take(index)

    def take(self, index: np.ndarray, column: np.ndarray | None = None) -> np.ndarray:
        got = {name: part.take(index, column) for name, part in self.parts.items()}
        none_kept = np.zeros((*got["tail"].shape, 0), np.float32)
        return topk_decode(got.get("values", none_kept), got.get("indices", none_kept), got["tail"], self.classes,
                           self.temperature, got.get("samples"))

    def held(self, spans: Sequence[Span]) -> TopKLogits:
        """As Rows.held, each part."""
        return TopKLogits({name: part.held(spans) for name, part in self.parts.items()}, self.classes,
                          self.temperature)


class QuantizedVectors:
    """float32 vectors of int8 or packed int4 codes and their scales (and, for logits, their
    offsets), dequantized on read (`length`: the unpacked last axis of int4 codes); read like
    Rows (a RowReader, cache/storage/rows.py)."""

    def __init__(self, codes: Rows, scales: Rows, length: int | None = None, offsets: Rows | None = None):
        self.codes, self.scales, self.length, self.offsets = codes, scales, length, offsets
        self.shape = codes.shape if length is None else (*codes.shape[:-1], length)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        return self.take(index)

    def take(self, index: np.ndarray, column: np.ndarray | None = None) -> np.ndarray:
        x = dequantize(self.codes.take(index, column), self.scales.take(index, column), self.length)
        return x if self.offsets is None else x + self.offsets.take(index, column).astype(np.float32)[..., None]

    def held(self, spans: Sequence[Span]) -> QuantizedVectors:
        """As Rows.held, codes, scales and offsets."""
        return QuantizedVectors(self.codes.held(spans), self.scales.held(spans), self.length,
                                None if self.offsets is None else self.offsets.held(spans))


class Joined:
    """Vectors kept in parts along their last axis (a rank's float16 leading coordinates and
    the rest), read as one float32 array; read like Rows (a RowReader, cache/storage/rows.py)."""

    def __init__(self, parts: list[Rows | QuantizedVectors]):
        self.parts = parts
        self.shape = (*parts[0].shape[:-1], sum(part.shape[-1] for part in parts))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        return self.take(index)

    def take(self, index: np.ndarray, column: np.ndarray | None = None) -> np.ndarray:
        return np.concatenate([part.take(index, column).astype(np.float32) for part in self.parts], axis=-1)

    def held(self, spans: Sequence[Span]) -> Joined:
        """As Rows.held, each part."""
        return Joined([part.held(spans) for part in self.parts])


class HeadLogits:
    """Full float32 logits (..., C) of a cache that keeps none: its stored inputs x, in
    whatever encoding, through the teacher's classifier, x @ weight.T + bias; read like Rows
    (a RowReader, cache/storage/rows.py). The inputs are the features (logit_dtype = head)
    or, where `projection` (D, m) is given (logit_rank = m), the features' coordinates
    features @ projection, and `weight` the classifier's (C, m) W @ projection."""

    def __init__(self, features: Rows | QuantizedVectors | Joined, weight: np.ndarray, bias: np.ndarray,
                 projection: np.ndarray | None = None):
        self.features, self.weight, self.bias, self.projection = features, weight, bias, projection
        self.shape = (*features.shape[:-1], len(bias))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        return self.take(index)

    def take(self, index: np.ndarray, column: np.ndarray | None = None) -> np.ndarray:
        return self.rebuild(self.features.take(index, column))

    def rebuild(self, inputs: np.ndarray) -> np.ndarray:
        """The logits of stored inputs (..., D or m)."""
        # On torch's threads, which training sets, not a second pool of numpy's BLAS beside them.
        x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
        flat = x.reshape(-1, x.shape[-1])
        return torch.addmm(torch.from_numpy(self.bias), flat, torch.from_numpy(self.weight).T).reshape(
            *x.shape[:-1], -1).numpy()

    def held(self, spans: Sequence[Span]) -> HeadLogits:
        """As Rows.held, the inputs."""
        return HeadLogits(self.features.held(spans), self.weight, self.bias, self.projection)


# Where each part of a top-k or sampled split is stored (cache/schema.py).
_SPARSE_PARTS = {"values": "topk_values", "indices": "topk_indices", "tail": "tail_logsumexp",
                 "samples": "sample_indices"}


def logits_of(group: zarr.Group, split: str, budget: int = DEFAULT_BUDGET
              ) -> Rows | TopKLogits | QuantizedVectors | HeadLogits:
    """A split's logits (eval or aug), full whatever the stored encoding."""
    if f"{split}/logits" in group:
        return vectors_of(group, f"{split}/logits", budget)
    if "head" in group:
        if "head/projection" not in group:
            return HeadLogits(vectors_of(group, f"{split}/features", budget), read_all(group["head/weight"]),
                              read_all(group["head/bias"]))
        parts = [part for name in ("logit_lead", "logit_coords")
                 if (part := vectors_of(group, f"{split}/{name}", budget)) is not None]
        return HeadLogits(parts[0] if len(parts) == 1 else Joined(parts), read_all(group["head/weight"]),
                          read_all(group["head/bias"]), read_all(group["head/projection"]))
    parts = {part: Rows(group[f"{split}/{name}"], budget)
             for part, name in _SPARSE_PARTS.items() if f"{split}/{name}" in group}
    classes = group[f"{split}/{'topk_indices' if 'indices' in parts else 'sample_indices'}"].attrs["classes"]
    return TopKLogits(parts, classes, group[f"{split}/tail_logsumexp"].attrs.get("temperature", 1.0))


def vectors_of(group: zarr.Group, name: str, budget: int = DEFAULT_BUDGET) -> Rows | QuantizedVectors | None:
    """Stored vectors (e.g. aug/features, or int8 logits), float whatever the stored
    encoding; None for a cache without them."""
    if name not in group:
        return None
    rows = Rows(group[name], budget)
    scales, offsets = f"{name}_scales", f"{name}_offsets"
    if scales not in group:
        return rows
    return QuantizedVectors(rows, Rows(group[scales], budget), group[name].attrs.get("length"),
                            Rows(group[offsets], budget) if offsets in group else None)


class CacheMismatch(ValueError):
    """The cache was made for another teacher, data set or view setting."""


class TeacherCache:
    """A finished teacher cache. `identity` says what it was made from; `check` refuses
    to serve a caller that expects something else. Logits and features read as full
    arrays whatever their encoding (top-k, int8, int4, in rank m, from the features by the teacher's head):
    float16 as stored, float32 when rebuilt;
    the features are None in a cache made without them (feature_dtype none)."""

    def __init__(self, path: str | Path, budget: int = DEFAULT_BUDGET):
        if read_manifest(path) is None:
            raise FileNotFoundError(f"{path} is not a finished teacher cache (no manifest.json); "
                                    "run CacheTeacher for this data set")
        check_written(path)
        self.path = Path(path)
        self.group = zarr.open_group(str(path), mode="r")
        self.attrs = self.group.attrs.asdict()
        self.identity: dict = self.attrs["identity"]
        self.views: int = self.identity["views"]
        self.eval_logits = logits_of(self.group, "eval", budget)
        self.eval_features = vectors_of(self.group, "eval/features", budget)
        if self.views:
            self.aug_rows = read_all(self.group["aug/rows"])
            self.aug_params = Rows(self.group["aug/params"], budget)
            self.aug_logits = logits_of(self.group, "aug", budget)
            self.aug_features = vectors_of(self.group, "aug/features", budget)

    def check(self, expected: dict) -> None:
        """Raise CacheMismatch naming every setting where the cache differs from `expected`."""
        diffs = [f"{key}: cache has {self.identity.get(key)!r}, expected {value!r}"
                 for key, value in expected.items() if self.identity.get(key) != value]
        if diffs:
            raise CacheMismatch(f"teacher cache {self.path} does not match: " + "; ".join(diffs))

"""The teacher cache as a student reads it."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr

from cache.compact import dequantize, topk_decode
from cache.storage.blocks import read_manifest
from cache.storage.integrity import check_written, read_all
from cache.storage.rows import DEFAULT_BUDGET, Rows, Span


class TopKLogits:
    """Full float32 logits (..., C) of a top-k split, rebuilt on read (cache/compact.py);
    read like Rows (a RowReader, cache/storage/rows.py)."""

    def __init__(self, values: Rows, indices: Rows, tail: Rows, classes: int):
        self.values, self.indices, self.tail, self.classes = values, indices, tail, classes
        self.shape = (*values.shape[:-1], classes)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        return self.take(index)

    def take(self, index: np.ndarray, column: np.ndarray | None = None) -> np.ndarray:
        parts = (part.take(index, column) for part in (self.values, self.indices, self.tail))
        return topk_decode(*parts, self.classes)

    def held(self, spans: Sequence[Span]) -> TopKLogits:
        """As Rows.held, each part."""
        return TopKLogits(*(part.held(spans) for part in (self.values, self.indices, self.tail)), self.classes)


class QuantizedVectors:
    """float32 vectors of int8 or packed int4 codes and their scales, dequantized on read
    (`length`: the unpacked last axis of int4 codes); read like Rows (a RowReader,
    cache/storage/rows.py)."""

    def __init__(self, codes: Rows, scales: Rows, length: int | None = None):
        self.codes, self.scales, self.length = codes, scales, length
        self.shape = codes.shape if length is None else (*codes.shape[:-1], length)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        return self.take(index)

    def take(self, index: np.ndarray, column: np.ndarray | None = None) -> np.ndarray:
        return dequantize(self.codes.take(index, column), self.scales.take(index, column), self.length)

    def held(self, spans: Sequence[Span]) -> QuantizedVectors:
        """As Rows.held, codes and scales."""
        return QuantizedVectors(self.codes.held(spans), self.scales.held(spans), self.length)


def logits_of(group: zarr.Group, split: str, budget: int = DEFAULT_BUDGET) -> Rows | TopKLogits:
    """A split's logits (eval or aug), full whatever the stored encoding."""
    if f"{split}/logits" in group:
        return Rows(group[f"{split}/logits"], budget)
    parts = [group[f"{split}/{name}"] for name in ("topk_values", "topk_indices", "tail_logsumexp")]
    return TopKLogits(*(Rows(part, budget) for part in parts), parts[1].attrs["classes"])


def vectors_of(group: zarr.Group, name: str, budget: int = DEFAULT_BUDGET) -> Rows | QuantizedVectors | None:
    """Stored feature vectors (e.g. aug/features), float whatever the stored encoding; None
    for a cache without features."""
    if name not in group:
        return None
    rows = Rows(group[name], budget)
    scales = f"{name}_scales"
    if scales not in group:
        return rows
    return QuantizedVectors(rows, Rows(group[scales], budget), group[name].attrs.get("length"))


class CacheMismatch(ValueError):
    """The cache was made for another teacher, data set or view setting."""


class TeacherCache:
    """A finished teacher cache. `identity` says what it was made from; `check` refuses
    to serve a caller that expects something else. Logits and features read as full
    arrays whatever their encoding (top-k, int8, int4): float16 as stored, float32 when rebuilt;
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

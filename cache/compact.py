"""Compact encodings of teacher outputs: top-k logits and int8 vectors.

Top-k: per view, the K largest logits (float16, largest first), their class indices (the
smallest unsigned integer type that holds every class) and the logsumexp of the other
C - K logits (float16; -inf when K = C). `topk_decode` rebuilds full logits in which the
top-k keep their values and every other class gets the same logit, tail - log(C - K), so
that at temperature 1 the rebuilt distribution has the top-k probabilities and the tail's
total mass exactly, the mass spread evenly over the tail (as FKD and TinyViT do). At
another temperature the top-k keep their order and the tail its place below them; how
far that distribution is from the full one is measured (tests/test_compact.py, docs).

Int8: each vector (a view's pooled features, or one channel of a stage's map) is
stored as int8 codes q with one float16 scale s, x = q * s, s = max|x| / 127, so every
element is within s / 2 of its float32 value.
"""
from __future__ import annotations

import numpy as np
import torch

FEATURE_DTYPES = ("float16", "int8", "none")  # none: no features cached (a logits-only kd)


def index_dtype(classes: int) -> np.dtype:
    """The smallest unsigned integer type that holds every class index."""
    return np.dtype(next(t for t in (np.uint8, np.uint16, np.uint32) if classes <= np.iinfo(t).max + 1))


def topk_encode(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, indices, tail) of float32 logits (..., C): the k largest per row, largest
    first, and the logsumexp of the rest."""
    classes = logits.shape[-1]
    if not 0 < k <= classes:
        raise ValueError(f"topk = {k} for {classes} classes: use 1 to {classes}, or 0 for every class")
    t = torch.as_tensor(logits, dtype=torch.float32)
    values, indices = t.topk(k, dim=-1)
    rest = t.scatter(-1, indices, float("-inf"))
    tail = torch.logsumexp(rest, dim=-1)
    return (values.numpy().astype(np.float16), indices.numpy().astype(index_dtype(classes)),
            tail.numpy().astype(np.float16))


def topk_decode(values: np.ndarray, indices: np.ndarray, tail: np.ndarray, classes: int) -> np.ndarray:
    """Full float32 logits (..., C) rebuilt from topk_encode's output (see the module's docstring)."""
    k = values.shape[-1]
    fill = tail.astype(np.float32) - np.float32(np.log(classes - k)) if classes > k else tail.astype(np.float32)
    out = np.repeat(fill[..., None], classes, axis=-1)
    np.put_along_axis(out, indices.astype(np.int64), values.astype(np.float32), axis=-1)
    return out


def quantize_int8(x: np.ndarray, vector_dims: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(codes int8, scales float16) of float32 `x`, one scale per vector of its trailing
    `vector_dims` dimensions."""
    x = np.asarray(x, dtype=np.float32)
    axes = tuple(range(x.ndim - vector_dims, x.ndim))
    peak = np.abs(x).max(axis=axes, keepdims=True) if x.size else np.zeros(x.shape[:-vector_dims] + (1,) * vector_dims)
    scale = (peak / 127).astype(np.float16)
    # float16 rounds the scale down half the time: one step up keeps every code within +-127.
    scale = np.where(scale.astype(np.float32) * 127 < peak, np.nextafter(scale, np.float16(np.inf)), scale)
    safe = np.where(scale > 0, scale.astype(np.float32), 1)
    codes = np.clip(np.rint(x / safe), -127, 127).astype(np.int8)
    return codes, scale.reshape(x.shape[:x.ndim - vector_dims])


def dequantize_int8(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """float32 vectors from quantize_int8's codes and scales."""
    extra = codes.ndim - scales.ndim
    return codes.astype(np.float32) * scales.astype(np.float32).reshape(scales.shape + (1,) * extra)

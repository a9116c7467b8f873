"""Compact encodings of teacher outputs: top-k logits and int8 vectors.

Top-k: per view, the K largest logits (float16, largest first), their class indices (the
smallest unsigned integer type that holds every class) and the logsumexp of the other
C - K logits (float16; -inf when K = C). `topk_decode` rebuilds full logits in which the
top-k keep their values and every other class gets the same logit, tail - log(C - K), so
that at temperature 1 the rebuilt distribution has the top-k probabilities and the tail's
total mass exactly, the mass spread evenly over the tail (as FKD and TinyViT do). At
another temperature the top-k keep their order and the tail its place below them; how
far that distribution is from the full one is measured (tests/test_compact.py, docs).

Int8 and int4: each vector (a view's pooled features, or one channel of a stage's map) is
stored as integer codes q with one float16 scale s, x = q * s, s = max|x| / top with top =
127 (int8) or 7 (int4), so every element is within s / 2 of its float32 value. Int4 codes
are packed two to a byte along the last axis (uint8, the last axis halved, rounded up).
"""
from __future__ import annotations

import numpy as np
import torch

FEATURE_DTYPES = ("float16", "int8", "int4", "none")  # none: no features cached (a logits-only kd)
TOP_CODE = {"int8": 127, "int4": 7}  # the largest code of each quantized type


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


def quantize(x: np.ndarray, dtype: str = "int8", vector_dims: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(codes, scales float16) of float32 `x` as `dtype` (int8, or int4 packed into uint8),
    one scale per vector of its trailing `vector_dims` dimensions."""
    x, top = np.asarray(x, dtype=np.float32), TOP_CODE[dtype]
    axes = tuple(range(x.ndim - vector_dims, x.ndim))
    peak = np.abs(x).max(axis=axes, keepdims=True) if x.size else np.zeros(x.shape[:-vector_dims] + (1,) * vector_dims)
    scale = (peak / top).astype(np.float16)
    # float16 rounds the scale down half the time: one step up keeps every code within +-top.
    scale = np.where(scale.astype(np.float32) * top < peak, np.nextafter(scale, np.float16(np.inf)), scale)
    safe = np.where(scale > 0, scale.astype(np.float32), 1)
    codes = np.clip(np.rint(x / safe), -top, top).astype(np.int8)
    return (_pack(codes) if dtype == "int4" else codes), scale.reshape(x.shape[:x.ndim - vector_dims])


def dequantize(codes: np.ndarray, scales: np.ndarray, length: int | None = None) -> np.ndarray:
    """float32 vectors from quantize's codes and scales; `length` (the last axis before
    packing) marks int4 codes."""
    if length is not None:
        codes = _unpack(codes, length)
    extra = codes.ndim - scales.ndim
    return codes.astype(np.float32) * scales.astype(np.float32).reshape(scales.shape + (1,) * extra)


def _pack(codes: np.ndarray) -> np.ndarray:
    """Signed 4-bit codes, two to a byte along the last axis: element 2i low, 2i + 1 high."""
    if codes.shape[-1] % 2:
        codes = np.concatenate([codes, np.zeros_like(codes[..., :1])], axis=-1)
    nibbles = codes.astype(np.uint8) & 0xF
    return nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)


def _unpack(packed: np.ndarray, length: int) -> np.ndarray:
    nibbles = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(*packed.shape[:-1], -1)[..., :length]
    return np.where(nibbles > 7, nibbles.astype(np.int8) - 16, nibbles.astype(np.int8))

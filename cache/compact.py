"""Compact encodings of teacher outputs: top-k logits with their tail, sampled tails and
quantized vectors.

Top-k: per view, the K largest logits (float16, largest first), their class indices (the
smallest unsigned integer type that holds every class) and the tail, the other C - K
logits, as one number: T * logsumexp(tail / T) at the tail's temperature T (float16; -inf
when K = C). `topk_decode` rebuilds full logits in which the top-k keep their values and
every other class gets the same logit, so that at temperature T the rebuilt distribution
has the top-k probabilities and the tail's total mass exactly, the mass spread evenly over
the tail. With T = 1 (`tail = flat`, as FKD and TinyViT do) that holds at 1 only: at the
distillation temperature a flat tail rebuilt from its mass at 1 holds more mass than the
real one (the power-mean inequality); `tempered` stores it at the distillation temperature.
Either way the ranking inside the tail is lost.

Sampled tail: beside the top-k, S classes drawn from the tail's own distribution at T by
systematic sampling (sorted; `sample_tail`). The rebuilt distribution at T keeps the top-k
and the tail's mass exactly and gives each drawn class the tail's mass times the share of
the draws it got, every other class none (a logit far below the rest, `FLOOR`): its
expectation over the draws is the teacher's distribution, so the KL loss against it is an
unbiased estimate of the full loss's gradient (its value exceeds the full one's by a
constant of the view, the draws' entropy bias, which no student can change).

Int8 and int4: each vector (a view's logits, its pooled features, or one channel of a
stage's map) is stored as integer codes q with one float16 scale s, x = q * s, s = max|x| /
top with top = 127 (int8) or 7 (int4), so every element is within s / 2 of its float32
value. Int4 codes are packed two to a byte along the last axis (uint8, the last axis halved,
rounded up). Logits are centred first (`offset`, the midpoint of a view's range), which no
softmax sees: a rounded offset moves every logit of a view alike.

Rank m: a view's logits W f + b as the coordinates of its pooled features f on the m
directions of feature space that the classifier weighs most (`classifier_basis`), z = P^T f,
rebuilt as (W P) z + b. Those directions are the leading right singular vectors of W with
its mean row removed, which no softmax sees; a trained teacher's features lie mostly along
them, so a few of them hold nearly all of the logits' variance over the views.
"""
from __future__ import annotations

import numpy as np
import torch

FEATURE_DTYPES = ("float16", "int8", "int4", "none")  # none: no features cached (a logits-only kd)
TOP_CODE = {"int8": 127, "int4": 7}  # the largest code of each quantized type


def index_dtype(classes: int) -> np.dtype:
    """The smallest unsigned integer type that holds every class index."""
    return np.dtype(next(t for t in (np.uint8, np.uint16, np.uint32) if classes <= np.iinfo(t).max + 1))


FLOOR = -1e4  # the logit of a class a sampled tail drew no share for: below any softmax's reach


def topk_encode(logits: np.ndarray, k: int, temperature: float = 1.0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, indices, tail) of float32 logits (..., C): the k largest per row, largest
    first, and T * logsumexp(rest / T) at `temperature` T. k = 0 keeps no class: the tail
    is every class."""
    classes = logits.shape[-1]
    if not 0 <= k <= classes:
        raise ValueError(f"topk = {k} for {classes} classes: use 1 to {classes}, or 0 for every class")
    t = torch.as_tensor(logits, dtype=torch.float32)
    values, indices = t.topk(k, dim=-1)
    rest = t.scatter(-1, indices, float("-inf"))
    tail = temperature * torch.logsumexp(rest / temperature, dim=-1)
    return (values.numpy().astype(np.float16), indices.numpy().astype(index_dtype(classes)),
            tail.numpy().astype(np.float16))


def sample_tail(logits: np.ndarray, kept: np.ndarray, temperature: float, uniforms: np.ndarray,
                samples: int) -> np.ndarray:
    """`samples` classes drawn from the tail of float32 logits (..., C), the classes outside
    `kept` (..., k), at `temperature`, by systematic sampling: the tail's classes laid end to
    end, most probable first, over [0, 1) by their probabilities, and one draw at each of
    (u + i) / samples for i < samples, with one uniform number u in [0, 1) of `uniforms`
    (...) a view. Each class is drawn samples * p times in expectation, as with independent
    draws, but never more than one off it. Sorted, in the index type of C classes."""
    t = torch.tensor(np.asarray(logits, dtype=np.float64)) / temperature
    t = t.scatter(-1, torch.tensor(np.asarray(kept, dtype=np.int64)), float("-inf"))
    probs, order = torch.softmax(t, dim=-1).sort(-1, descending=True)
    cdf = probs.cumsum(-1)
    steps = (torch.tensor(np.asarray(uniforms, dtype=np.float64))[..., None] + torch.arange(samples)) / samples
    at = torch.searchsorted(cdf, steps * cdf[..., -1:], right=True)
    # A draw at the very top of the rounded cdf: the last class with any mass.
    at = torch.minimum(at, (probs > 0).sum(-1, keepdim=True) - 1)
    drawn = order.gather(-1, at).sort(-1).values
    return drawn.numpy().astype(index_dtype(logits.shape[-1]))


def tail_uniforms(seed: int, split: str, rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The uniform numbers that draw the sampled tails of store `rows` of `split` (eval or
    aug): `shape` (one per view: (views,) or ()) a row, from a generator of the row's own,
    so that any block of rows, in any run of the pass, draws the same classes."""
    stream = ("eval", "aug").index(split)
    return np.stack([np.random.default_rng([seed, 3, stream, int(r)]).random(shape) for r in rows]) \
        if len(rows) else np.zeros((0, *shape))


def topk_decode(values: np.ndarray, indices: np.ndarray, tail: np.ndarray, classes: int,
                temperature: float = 1.0, samples: np.ndarray | None = None) -> np.ndarray:
    """Full float32 logits (..., C) rebuilt from topk_encode's output and, for a sampled
    tail, sample_tail's draws (see the module's docstring); `values` and `indices` may keep
    no class (last axis 0)."""
    k, tail = values.shape[-1], tail.astype(np.float32)
    if samples is not None:
        counts = np.zeros((*tail.shape, classes), np.float32)
        _add_counts(counts, samples.astype(np.int64))
        with np.errstate(divide="ignore"):
            share = np.log(counts / samples.shape[-1])
        out = np.where(counts > 0, tail[..., None] + np.float32(temperature) * share, np.float32(FLOOR))
    else:
        fill = tail - np.float32(temperature * np.log(classes - k)) if classes > k else tail
        out = np.repeat(fill[..., None], classes, axis=-1)
    np.put_along_axis(out, indices.astype(np.int64), values.astype(np.float32), axis=-1)
    return out


def _add_counts(counts: np.ndarray, drawn: np.ndarray) -> None:
    """counts[..., c] += how often c is in drawn[..., :], in place."""
    flat = counts.reshape(-1, counts.shape[-1])
    rows = np.repeat(np.arange(len(flat)), drawn.shape[-1])
    np.add.at(flat, (rows, drawn.reshape(-1)), 1)


def classifier_basis(weight: np.ndarray, rank: int) -> np.ndarray:
    """(D, m) orthonormal, m = min(rank, C, D): the leading right singular vectors of the
    classifier `weight` (C, D) with its mean row removed, each signed so that its largest
    entry is positive (a singular vector's sign is the LAPACK build's choice)."""
    weight = np.asarray(weight, dtype=np.float64)
    _, _, vt = np.linalg.svd(weight - weight.mean(0), full_matrices=False)
    basis = vt[:min(rank, *weight.shape)]
    peaks = basis[np.arange(len(basis)), np.abs(basis).argmax(1)]
    return (basis * np.sign(peaks)[:, None]).T.astype(np.float32)


def quantize_logits(logits: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, scales, offsets float16) of float32 logits (..., C): centred on the midpoint
    of each view's range, then quantized as one vector."""
    logits = np.asarray(logits, dtype=np.float32)
    empty = logits.shape[-1] == 0 or logits.size == 0
    offsets = np.zeros(logits.shape[:-1], np.float32) if empty else (logits.max(-1) + logits.min(-1)) / 2
    offsets = offsets.astype(np.float16)
    codes, scales = quantize(logits - offsets[..., None].astype(np.float32), dtype)
    return codes, scales, offsets


def dequantize_logits(codes: np.ndarray, scales: np.ndarray, offsets: np.ndarray,
                      length: int | None = None) -> np.ndarray:
    """float32 logits from quantize_logits' output (`length`: as dequantize's)."""
    return dequantize(codes, scales, length) + offsets.astype(np.float32)[..., None]


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

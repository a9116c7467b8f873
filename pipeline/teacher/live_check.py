"""A teacher cache checked against the live teacher: a seeded sample of its cached views
(eval views of every split, and recorded random views of training images) rendered again
from the image store, the teacher run on them, and the largest differences of
log-probabilities and of features against what the cache holds, each judged by the bound
its encoding and the pass's precision keep: float16 rounds a value by at most 2^-11 of it,
top-k keeps exact only its k classes and the tail's mass (at the tail's temperature; a
sampled tail's draws are not checked), int8 and int4 keep each logit or feature within
half a step (max|x| / 127 or / 7, halved). Logits rebuilt from the features by the
teacher's head: the features are checked as features, the stored head on the live features.
Logits in rank m: the live features' coordinates (by the stored projection) through the
stored head against the stored coordinates', each logit within its coordinates' rounding
weighed by the head's row."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cache.compact import TOP_CODE
from cache.reader import HeadLogits, QuantizedVectors, TeacherCache, TopKLogits
from pipeline.data.imagestore import ImageStore
from pipeline.inference import predict
from pipeline.views.records import CROP_AND_FLIP, Recipe, whole_views

# The relative rounding of a cached value by the pass's precision: float16's storage in fp32;
# under autocast (bf16, fp16) the forward's own, about bfloat16's (an estimate: no GPU pass checked yet).
ROUNDING = {"fp32": 2.0 ** -11, "bf16": 2.0 ** -8, "fp16": 2.0 ** -8}
SLACK = 1e-3  # the forward's own float differences (batch composition, threads), absolute


@dataclass(frozen=True)
class Difference:
    """Of one kind of output, the sample's worst view (the largest difference against its
    bound), its difference and its bound."""
    what: str       # log-probabilities or features
    largest: float
    bound: float
    view: str

    @property
    def within(self) -> bool:
        return self.largest <= self.bound


@dataclass(frozen=True)
class Sampled:
    """Views of the sample, of one kind: what they are, the teacher's outputs for them and the cache's."""
    names: list[str]
    live: tuple[np.ndarray, np.ndarray]           # logits, features (float32)
    cached: tuple[np.ndarray, np.ndarray | None]  # as the cache decodes them
    kept: np.ndarray | None                       # (n, k) the classes a top-k cache keeps; None: all


def check_cache(cache: TeacherCache, store: ImageStore, net: torch.nn.Module, sample: int,
                precision: str = "fp32", seed: int = 0) -> list[Difference]:
    """Log-probabilities and, where cached, features of `sample` cached views against `net`
    (the teacher, in fp32, on the CPU or a GPU), half eval views, half recorded random views;
    `precision`: the pass's (ROUNDING)."""
    rounding = ROUNDING[precision]
    rng = np.random.default_rng([seed, 2])
    size = cache.identity.get("image_size", store.size)
    parts = [_eval_views(cache, store, net, rng, sample - sample // 2 if cache.views else sample, size)]
    if cache.views:
        parts.append(_aug_views(cache, store, net, rng, sample // 2, size))
    parts = [part for part in parts if part.names]
    found = [_worst("log-probabilities", parts, lambda part: _logprob_gaps(part, rounding, cache.eval_logits))]
    if cache.eval_features is not None:
        found.append(_worst("features", parts, lambda part: _feature_gaps(part, cache.eval_features, rounding)))
    return found


def _eval_views(cache: TeacherCache, store: ImageStore, net: torch.nn.Module, rng: np.random.Generator,
                count: int, size: int) -> Sampled:
    rows = np.sort(rng.choice(len(store.labels), min(count, len(store.labels)), replace=False))
    live = predict(net, store.images, rows, whole_views(len(rows), store.size)[:, None], size)[:2]
    cached = (cache.eval_logits.take(rows), None if cache.eval_features is None else cache.eval_features.take(rows))
    kept = _kept(cache.eval_logits, rows)
    return Sampled([f"eval view of store row {r}" for r in rows.tolist()], live, cached, kept)


def _aug_views(cache: TeacherCache, store: ImageStore, net: torch.nn.Module, rng: np.random.Generator,
               count: int, size: int) -> Sampled:
    positions = np.sort(rng.choice(len(cache.aug_rows), min(count, len(cache.aug_rows)), replace=False))
    views = rng.integers(0, cache.views, len(positions))
    rows = cache.aug_rows[positions]
    params = cache.aug_params.take(positions, views)
    recipe = Recipe(**cache.attrs.get("recipe", {})) if cache.attrs.get("recipe") else CROP_AND_FLIP
    live = predict(net, store.images, rows, params[:, None], size, recipe=recipe)[:2]
    cached = (cache.aug_logits.take(positions, views),
              None if cache.aug_features is None else cache.aug_features.take(positions, views))
    kept = _kept(cache.aug_logits, positions, views)
    names = [f"view {v} of training image at store row {r}" for r, v in zip(rows.tolist(), views.tolist())]
    return Sampled(names, live, cached, kept)


def _kept(logits, index: np.ndarray, column: np.ndarray | None = None) -> np.ndarray | None:
    """The classes kept exactly of these views ((n, k), maybe k = 0); None where all are."""
    if not isinstance(logits, TopKLogits):
        return None
    if logits.indices is None:
        return np.zeros((len(index), 0), np.int64)
    return logits.indices.take(index, column)


def _worst(what: str, parts: list[Sampled], gaps) -> Difference:
    """The view whose gap is largest against its bound, over every part."""
    gap, bound = (np.concatenate(column) for column in zip(*(gaps(part) for part in parts)))
    i = int(np.argmax(gap / bound))
    names = [name for part in parts for name in part.names]
    return Difference(what, float(gap[i]), float(bound[i]), names[i])


def _logprob_gaps(part: Sampled, rounding: float, logits) -> tuple[np.ndarray, np.ndarray]:
    """Per view, the largest difference of log-probabilities (at the tail's temperature T)
    over the classes the cache keeps and, for a top-k cache, of the tail's log-mass; and its
    bound: each kept logit and the tail's logsumexp round by `rounding` of the largest (an
    int8 or int4 logit by half a step, at most max|x| / 127 or / 7 halved), so a
    log-probability (a logit less the logsumexp of all) moves by at most twice that, over T."""
    t = logits.temperature if isinstance(logits, TopKLogits) else 1.0
    projected = isinstance(logits, HeadLogits) and logits.projection is not None
    if projected:
        coords = part.live[1] @ logits.projection
        reference, rebuilt = logits.rebuild(coords), part.cached[0]
        peak = np.abs(coords).max(1) * np.abs(logits.weight).sum(1).max()
    else:
        # The stored head on the live features: the stored features have a check of their own.
        reference = part.live[0]
        rebuilt = logits.rebuild(part.live[1]) if isinstance(logits, HeadLogits) else part.cached[0]
        peak = np.abs(part.live[0]).max(1)
    live, cached = (torch.log_softmax(torch.as_tensor(x, dtype=torch.float32) / t, 1)
                    for x in (reference, rebuilt))
    gap = (live - cached).abs().numpy()
    if part.kept is not None:
        kept = torch.as_tensor(part.kept.astype(np.int64))
        tails = [torch.logsumexp(x.scatter(1, kept, float("-inf")), 1) for x in (live, cached)]
        gap = np.concatenate([np.take_along_axis(gap, part.kept.astype(np.int64), 1),
                              torch.nan_to_num((tails[0] - tails[1]).abs(), nan=0.0).numpy()[:, None]], 1)
    stored = logits.features if projected else logits
    # A rank's float16 leading coordinates beside its quantized rest: the rest's step bounds them all.
    quantized = [p for p in getattr(stored, "parts", [stored]) if isinstance(p, QuantizedVectors)]
    step = 1 / TOP_CODE["int4" if quantized[0].length is not None else "int8"] if quantized else 0.0
    return gap.max(1), peak * (2 * rounding + step) / t + SLACK


def _feature_gaps(part: Sampled, stored, rounding: float) -> tuple[np.ndarray, np.ndarray]:
    """Per view, the largest difference of a feature, and its bound: half a quantization step
    for int8 and int4, and the rounding of the precision (a float16 scale's, for them)."""
    live, cached = part.live[1], part.cached[1]
    peak = np.abs(live).max(1)
    step = 1 / (2 * TOP_CODE["int4" if stored.length is not None else "int8"]) \
        if isinstance(stored, QuantizedVectors) else 0.0
    return np.abs(live - cached).max(1), peak * (step + 2 * rounding) + SLACK

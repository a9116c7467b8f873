"""Paired bootstrap over test images: a percentile interval for the difference of top-1 or
mAP between two runs scored on the same images.

A resample is given by multiplicity counts (how often each image was drawn), so a run's
metric on thousands of resamples is a few gathers and cumulative sums over rankings sorted
once, instead of re-sorting every resample."""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from pipeline.evaluation.metrics import softmax

Scorer = Callable[[np.ndarray], np.ndarray]


def paired_interval(labels: np.ndarray, logits_a: np.ndarray, logits_b: np.ndarray, metric: str,
                    resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(point, low, high) of metric(a) - metric(b), as fractions: point on all test images,
    (low, high) the percentile interval at `level` of the differences on paired resamples."""
    (point_a, a), (point_b, b) = (bootstrap_values(labels, x, metric, resamples, seed) for x in (logits_a, logits_b))
    return interval(point_a - point_b, a - b, level)


def bootstrap_values(labels: np.ndarray, logits: np.ndarray, metric: str, resamples: int = 2000,
                     seed: int = 0) -> tuple[float, np.ndarray]:
    """One run's metric on all images and on each of `resamples` resamples of len(labels)
    images drawn with replacement. The resamples depend only on (len(labels), resamples,
    seed), so runs scored with the same seed see the same images: their differences pair."""
    labels = np.asarray(labels)
    score = scorer(labels, logits, metric)
    counts = resample_counts(len(labels), resamples, seed, chunk_for(logits))
    return float(score(np.ones((1, len(labels)), np.int32))[0]), np.concatenate([score(w) for w in counts])


def interval(point: float, values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(point, low, high): the central percentile interval of the bootstrap values."""
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(point), float(low), float(high)


def resample_counts(n: int, resamples: int, seed: int, chunk: int) -> Iterator[np.ndarray]:
    """Yield (rows, n) int32 counts of n draws with replacement, `chunk` resamples at a time."""
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        drawn = rng.integers(0, n, size=(rows, n)) + n * np.arange(rows)[:, None]
        yield np.bincount(drawn.ravel(), minlength=rows * n).reshape(rows, n).astype(np.int32)


def chunk_for(logits: np.ndarray, elements: int = 1 << 20) -> int:
    """Resamples per chunk: the mAP gather is (chunk, images x classes); small chunks stay in cache."""
    return max(1, elements // max(1, np.size(logits)))


def scorer(labels: np.ndarray, logits: np.ndarray, metric: str) -> Scorer:
    """The run's metric ("top1" or "mAP", as in classification_metrics) on each resample
    of a (resamples, images) count matrix."""
    if metric == "top1":
        correct = (np.argmax(logits, 1) == labels).astype(np.float64)
        return lambda counts: counts @ correct / counts.sum(1)
    if metric == "mAP":
        return _map_scorer(labels, softmax(logits))
    raise ValueError(f"unknown metric {metric!r}: top1 or mAP")


def _map_scorer(labels: np.ndarray, scores: np.ndarray) -> Scorer:
    """Per class, images ranked by falling score are cut into segments, each ending with a
    tie group that holds positives. A resample's AP is sum(precision * new positives) /
    positives over segments, where precision = drawn positives / drawn images up to the
    segment's end: exactly average_precision on the resample (repeats share a score, so they
    share its tie group; a segment not drawn adds nothing)."""
    order, seg_starts, positives, group_starts, first_seg = [], [], [], [], []
    for c in np.unique(labels):  # a class absent from the test set is absent from every resample
        ranked = np.argsort(-scores[:, c], kind="stable")
        group = np.r_[0, np.cumsum(np.diff(scores[ranked, c]) != 0)]  # tie group of each rank
        is_pos = labels[ranked] == c
        pos_groups = np.unique(group[is_pos])
        seg = np.searchsorted(pos_groups, group)  # the first positive group at or after each rank
        cut = int(np.sum(seg < len(pos_groups)))  # ranks below the last positive never count
        first_seg.append(sum(map(len, seg_starts)))
        seg_starts.append(sum(map(len, order)) + _starts(seg[:cut]))
        order.append(ranked[:cut])
        group_starts.append(sum(map(len, positives)) + _starts(group[is_pos]))
        positives.append(ranked[is_pos])
    order, seg_starts, positives, group_starts = map(np.concatenate, (order, seg_starts, positives, group_starts))
    first_seg = np.asarray(first_seg)
    class_of_seg = np.repeat(np.arange(len(first_seg)), np.diff(np.r_[first_seg, len(seg_starts)]))

    def running(per_segment: np.ndarray) -> np.ndarray:
        """Cumulative sum over each class's segments."""
        total = np.cumsum(per_segment, 1)
        return total - np.c_[np.zeros(len(total), total.dtype), total][:, first_seg][:, class_of_seg]

    def mean_ap(counts: np.ndarray) -> np.ndarray:
        drawn = running(_segment_sums(counts, order, seg_starts))
        new = _segment_sums(counts, positives, group_starts)
        ap_sum = np.add.reduceat(running(new) / np.maximum(drawn, 1) * new, first_seg, axis=1)
        pos = np.add.reduceat(new, first_seg, axis=1)
        present = pos > 0
        return np.sum(np.where(present, ap_sum / np.maximum(pos, 1), 0), 1) / present.sum(1)

    return mean_ap


def _segment_sums(counts: np.ndarray, index: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(rows, len(starts)) sums of counts[:, index] over segments beginning at starts;
    one flat reduceat, much faster than reduceat or cumsum along axis 1."""
    rows = len(counts)
    flat = np.take(counts, index, axis=1).ravel()
    return np.add.reduceat(flat, (starts + len(index) * np.arange(rows)[:, None]).ravel()).reshape(rows, -1)


def _starts(keys: np.ndarray) -> np.ndarray:
    """Indices where a run of equal consecutive keys begins."""
    return np.flatnonzero(np.r_[True, np.diff(keys) != 0])

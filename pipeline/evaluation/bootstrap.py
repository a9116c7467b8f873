"""Paired bootstrap over test images: a percentile interval for the difference of top-1 or
mAP between two runs scored on the same images.

A resample is given by multiplicity counts (how often each image was drawn), drawn a chunk
of resamples at a time for every run and metric. A metric on a resample is made of sums of
the counts over sets of images fixed once per run: the correct images for top-1, for mAP
the segments of each class's ranking down to its last positive (the images below it never
count). Torch's quantized embedding_bag gathers and sums a chunk's counts, stored as bytes,
over every set in one threaded pass; float32 sums of such integers are exact."""
from __future__ import annotations

from typing import Callable, Hashable, Iterator

import numpy as np
import torch

from pipeline.evaluation.metrics import softmax

METRICS = ("top1", "mAP")
Scorer = Callable[[torch.Tensor], np.ndarray]


def paired_interval(labels: np.ndarray, logits_a: np.ndarray, logits_b: np.ndarray, metric: str,
                    resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(point, low, high) of metric(a) - metric(b), as fractions: point on all test images,
    (low, high) the percentile interval at `level` of the differences on paired resamples."""
    values = bootstrap_values(labels, {"a": logits_a, "b": logits_b}, (metric,), resamples, seed)
    (point_a, a), (point_b, b) = values["a", metric], values["b", metric]
    return interval(point_a - point_b, a - b, level)


def bootstrap_values(labels: np.ndarray, runs: dict[Hashable, np.ndarray], metrics: tuple[str, ...] = METRICS,
                     resamples: int = 2000, seed: int = 0) -> dict[tuple, tuple[float, np.ndarray]]:
    """{(run, metric): (the metric on all images, its values on each of `resamples` resamples
    of len(labels) images drawn with replacement)} for runs {name: logits}. The resamples
    depend only on (len(labels), resamples, seed), so runs scored with the same seed see the
    same images: their differences pair."""
    labels = np.asarray(labels)
    scorers = {(name, metric): scorer(labels, logits, metric) for name, logits in runs.items() for metric in metrics}

    def score(counts: np.ndarray) -> dict[tuple, np.ndarray]:
        weights = packed(counts)
        return {key: run(weights) for key, run in scorers.items()}
    every = score(np.ones((len(labels), 1), np.uint8))
    chunks = [score(counts) for counts in resample_counts(len(labels), resamples, seed, chunk_for(len(labels)))]
    return {key: (float(every[key][0]), np.concatenate([c[key] for c in chunks])) for key in scorers}


def interval(point: float, values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(point, low, high): the central percentile interval of the bootstrap values."""
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(point), float(low), float(high)


def resample_counts(n: int, resamples: int, seed: int, chunk: int) -> Iterator[np.ndarray]:
    """Yield (n, rows) uint8 counts of n draws with replacement, a column per resample,
    `chunk` resamples at a time. Resample i is row i of rng.integers(0, n, (resamples, n))."""
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        drawn = rng.integers(0, n, size=(rows, n)) * rows + np.arange(rows)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=n * rows).reshape(n, rows)
        if counts.max() > 255:  # odds below 1e-500 for n draws of n images
            raise ValueError(f"an image drawn {counts.max()} times in one resample of {n}: counts are bytes")
        yield counts.astype(np.uint8)


def chunk_for(n: int, counts_bytes: int = 1 << 22) -> int:
    """Resamples scored at a time: a multiple of 64, where the byte embedding_bag runs
    fastest, as many as keep a chunk's counts of n images within a few MB of cache."""
    return max(64, counts_bytes // max(1, n) // 64 * 64)


def packed(counts: np.ndarray) -> torch.Tensor:
    """(n, rows) uint8 counts as quantized embedding_bag's rows: the bytes, then a float32
    scale of 1 and offset of 0, so that the sums it returns are the counts' own."""
    rows = np.empty((len(counts), counts.shape[1] + 8), np.uint8)
    rows[:, :-8], rows[:, -8:] = counts, np.array([1.0, 0.0], np.float32).view(np.uint8)
    return torch.from_numpy(rows)


def scorer(labels: np.ndarray, logits: np.ndarray, metric: str) -> Scorer:
    """The run's metric ("top1" or "mAP", as in classification_metrics) on each resample
    of a packed (images, resamples) count matrix: correct images drawn over images drawn."""
    if metric == "top1":
        correct = np.flatnonzero(np.argmax(logits, 1) == labels)
        index, offsets = _flat([(np.r_[correct, np.arange(len(labels))], np.array([len(correct), len(labels)]))])
        return lambda counts: np.divide(*_segment_sums(counts, index, offsets).T)
    if metric == "mAP":
        return _map_scorer(labels, _class_scores(logits))
    raise ValueError(f"unknown metric {metric!r}: top1 or mAP")


def _map_scorer(labels: np.ndarray, scores: np.ndarray) -> Scorer:
    """Per class, the images ranked by falling score down to the last positive are cut into
    segments, the k-th ending with the tie group of the k-th highest score a positive has. A
    resample's AP is sum(precision * new positives) / positives over segments, where
    precision = drawn positives / drawn images up to the segment's end: exactly
    average_precision on the resample (repeats share a score, so they share its tie group; a
    segment not drawn adds nothing). Images below the last positive never count.
    scores: (classes, images)."""
    by_class = np.argsort(labels, kind="stable")
    classes, starts = np.unique(labels[by_class], return_index=True)
    members, positives = [], []
    # a class absent from the test set is absent from every resample
    for c, pos in zip(classes, np.split(by_class, starts[1:])):
        levels = -np.unique(scores[c, pos])[::-1]  # the positives' scores, falling, negated: ascending
        above = np.flatnonzero(scores[c] >= -levels[-1])  # at or above the last positive
        members.append(_by_segment(above, np.searchsorted(levels, -scores[c, above]), len(levels)))
        positives.append(_by_segment(pos, np.searchsorted(levels, -scores[c, pos]), len(levels)))
    first = np.cumsum([0] + [len(sizes) for _, sizes in members[:-1]])
    (order, seg_offsets), (positives, group_offsets) = _flat(members), _flat(positives)

    def mean_ap(counts: torch.Tensor) -> np.ndarray:
        drawn, _ = _running(_segment_sums(counts, order, seg_offsets), first)
        new = _segment_sums(counts, positives, group_offsets)
        found, pos = _running(new.copy(), first)
        np.divide(found, np.maximum(drawn, 1, out=drawn), out=found)
        # summed along each class's segments as reports always were: the same numbers to the last bit
        ap = np.add.reduceat(np.multiply(found, new, out=found), first, axis=1)
        present = pos > 0
        return np.sum(np.where(present, ap / np.maximum(pos, 1), 0), 1) / present.sum(1)

    return mean_ap


def _by_segment(items: np.ndarray, segment: np.ndarray, segments: int) -> tuple[np.ndarray, np.ndarray]:
    """items grouped by their segment, in their order within it (the image order of `items`
    is the order embedding_bag reads the counts in), and the size of each segment."""
    small = segment.astype(np.min_scalar_type(segments))  # 8 or 16 bits: a radix sort
    return items[np.argsort(small, kind="stable")], np.bincount(segment, minlength=segments)


def _flat(groups: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every class's (items, segment sizes) as one index and its segments' offsets, for
    embedding_bag: int32 where it fits, to halve their memory."""
    dtype = np.int32 if sum(len(items) for items, _ in groups) < 2**31 else np.int64
    index = np.concatenate([items for items, _ in groups], dtype=dtype)
    sizes = np.concatenate([sizes for _, sizes in groups])
    return torch.from_numpy(index), torch.from_numpy(np.r_[0, np.cumsum(sizes[:-1])].astype(dtype))


def _segment_sums(counts: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor) -> np.ndarray:
    """(resamples, segments) float64 sums of the packed counts of the images `index` lists,
    over segments beginning at offsets."""
    sums = torch.ops.quantized.embedding_bag_byte_rowwise_offsets(counts, index, offsets)
    return np.ascontiguousarray(sums.numpy().T, dtype=np.float64)


def _running(per_segment: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative sums over each class's segments (classes beginning at `first`), in place,
    and each class's total; counts, so every sum is exact."""
    totals = np.add.reduceat(per_segment, first, axis=1)
    per_segment[:, first[1:]] -= totals[:, :-1]  # one cumsum then restarts at each class
    return np.cumsum(per_segment, 1, out=per_segment), totals


def _class_scores(logits: np.ndarray, rows: int = 256) -> np.ndarray:
    """softmax(logits) as (classes, images), a block of rows at a time: softmax is row by
    row, so these are its numbers, and the blocks' temporaries stay in cache."""
    scores = np.empty(logits.shape[::-1])
    for start in range(0, len(logits), rows):
        scores[:, start:start + rows] = softmax(logits[start:start + rows]).T
    return scores

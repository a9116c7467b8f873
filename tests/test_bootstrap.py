"""The paired bootstrap: exact metrics on every resample, seeded, honest intervals."""
import itertools

import numpy as np
import pytest

from pipeline.evaluation import bootstrap
from pipeline.evaluation.bootstrap import bootstrap_values, interval, packed, paired_interval, resample_counts, scorer
from pipeline.evaluation.metrics import classification_metrics


def _run(seed: int, n: int = 60, classes: int = 5, ties: bool = False):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[labels]
    return labels, np.round(logits) if ties else logits


@pytest.mark.parametrize("metric", ["top1", "mAP"])
@pytest.mark.parametrize("ties", [False, True])
def test_all_counts_one_is_the_plain_metric(metric, ties):
    labels, logits = _run(0, ties=ties)
    got = scorer(labels, logits, metric)(packed(np.ones((len(labels), 1), np.uint8)))[0]
    assert got == pytest.approx(classification_metrics(logits, labels)[metric], abs=1e-12)


@pytest.mark.parametrize("metric", ["top1", "mAP"])
@pytest.mark.parametrize("ties", [False, True])
def test_counts_are_the_metric_on_the_resample_with_repeats(metric, ties):
    labels, logits = _run(1, n=15, classes=4, ties=ties)  # few images: classes drop out of resamples
    counts = next(resample_counts(len(labels), 40, seed=2, chunk=40))
    got = scorer(labels, logits, metric)(packed(counts))
    for column, value in zip(counts.T, got):
        drawn = np.repeat(np.arange(len(labels)), column.astype(int))
        assert value == pytest.approx(classification_metrics(logits[drawn], labels[drawn])[metric], abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_intervals_equal_a_direct_bootstrap_of_the_same_draws(ties, monkeypatch):
    """The numbers reports have always given: resample i draws row i of one seeded
    rng.integers(0, n, (resamples, n)) and is scored by classification_metrics."""
    labels, a = _run(6, n=40, classes=6, ties=ties)  # few images a class: classes drop out
    b = _run(7, n=40, classes=6, ties=ties)[1]
    monkeypatch.setattr(bootstrap, "chunk_for", lambda n: 7)  # several chunks, the last one short
    drawn = np.random.default_rng(3).integers(0, len(labels), size=(50, len(labels)))
    for metric in ("top1", "mAP"):
        gap = lambda d: (classification_metrics(a[d], labels[d])[metric]  # noqa: E731
                         - classification_metrics(b[d], labels[d])[metric])
        expected = interval(gap(np.arange(len(labels))), np.array([gap(d) for d in drawn]))
        assert paired_interval(labels, a, b, metric, resamples=50, seed=3) == pytest.approx(expected, abs=1e-12)


def test_seeded_and_chunk_free():
    labels, a = _run(2)
    _, b = _run(3)
    b = b[:, np.random.default_rng(0).permutation(5)]
    first = paired_interval(labels, a, b, "mAP", resamples=300, seed=0)
    assert paired_interval(labels, a, b, "mAP", resamples=300, seed=0) == first
    assert paired_interval(labels, a, b, "mAP", resamples=300, seed=1)[1:] != first[1:]
    counts = list(resample_counts(len(labels), 7, seed=0, chunk=3))
    assert np.array_equal(np.concatenate(counts, 1), next(resample_counts(len(labels), 7, seed=0, chunk=7)))


@pytest.mark.parametrize("metric", ["top1", "mAP"])
def test_interval_covers_the_point_and_narrows_with_more_images(metric):
    labels, a = _run(4)
    _, b = _run(5)
    b = b[:, ::-1]  # b is worse: a clear positive difference
    point, low, high = paired_interval(labels, a, b, metric, resamples=500)
    assert point == pytest.approx(classification_metrics(a, labels)[metric] - classification_metrics(b, labels)[metric])
    assert low < point < high
    tile = lambda x: np.concatenate([x] * 4)  # noqa: E731 the same per-image pattern, 4x the images
    point4, low4, high4 = paired_interval(tile(labels), tile(a), tile(b), metric, resamples=500)
    assert point4 == pytest.approx(point) and low4 < point4 < high4
    assert high4 - low4 < 0.7 * (high - low)  # ~1/sqrt(4) of the width


def test_top1_interval_by_hand():
    # a right on both images, b only on the first: a resample's gap is the share of image 2
    # drawn, 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4; point 1/2, 95% interval [0, 1]
    labels = np.array([0, 1])
    a = np.array([[1.0, 0], [0, 1]])
    b = np.array([[1.0, 0], [1, 0]])
    assert paired_interval(labels, a, b, "top1") == (0.5, 0.0, 1.0)
    values = bootstrap_values(labels, {"a": a, "b": b}, ("top1",), 4000)
    diffs = values["a", "top1"][1] - values["b", "top1"][1]
    assert [np.mean(diffs == v) for v in (0, 0.5, 1)] == pytest.approx([0.25, 0.5, 0.25], abs=0.03)


def test_map_distribution_matches_exact_enumeration():
    # 3 images: all 27 equally likely ordered draws give the exact distribution of the gap
    labels = np.array([0, 1, 1])
    a = np.array([[2.0, 0], [0, 1], [1, 0]])
    b = np.array([[0.0, 1], [0, 1], [0, 2]])
    exact = []
    for draw in itertools.product(range(3), repeat=3):
        d = list(draw)
        exact.append(classification_metrics(a[d], labels[d])["mAP"] - classification_metrics(b[d], labels[d])["mAP"])
    exact = np.round(exact, 12)
    values = bootstrap_values(labels, {"a": a, "b": b}, ("mAP",), 8000)
    diffs = values["a", "mAP"][1] - values["b", "mAP"][1]
    values = np.unique(exact)
    assert set(np.round(diffs, 12)) <= set(values)
    for v in values:
        assert np.mean(np.round(diffs, 12) == v) == pytest.approx(np.mean(exact == v), abs=0.02)


def test_unknown_metric_is_refused():
    labels, logits = _run(0)
    with pytest.raises(ValueError, match="top5"):
        scorer(labels, logits, "top5")

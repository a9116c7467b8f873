"""Metrics agree with scikit-learn on random scores, ties included."""
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, top_k_accuracy_score

from pipeline.evaluation.metrics import average_precision, classification_metrics


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, 200) / 5.0 if seed % 2 else rng.random(200)  # odd seeds: many ties
    positive = rng.random(200) < 0.2
    assert average_precision(scores, positive) == pytest.approx(average_precision_score(positive, scores))


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 300)
    logits = rng.normal(size=(300, 7)) + 2 * np.eye(7)[labels] * rng.random((300, 1))
    teacher = logits + rng.normal(size=logits.shape)
    m = classification_metrics(logits, labels, teacher)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert m["top1"] == pytest.approx(np.mean(logits.argmax(1) == labels))
    assert m["top5"] == pytest.approx(top_k_accuracy_score(labels, logits, k=5))
    per_class = [average_precision_score(labels == c, probs[:, c]) for c in range(7)]
    assert m["per_class_ap"] == pytest.approx(per_class)
    assert m["mAP"] == pytest.approx(np.mean(per_class))
    assert m["teacher_agreement"] == pytest.approx(np.mean(logits.argmax(1) == teacher.argmax(1)))


def test_class_without_test_images_is_left_out_of_map():
    labels = np.array([0, 0, 1, 1])
    logits = np.array([[2.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0]])
    m = classification_metrics(logits, labels)
    assert m["per_class_ap"][2] is None
    assert m["mAP"] == pytest.approx(np.mean(m["per_class_ap"][:2]))

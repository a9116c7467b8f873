"""Classification metrics: top-k accuracy, per-class AP and mAP, agreement with a teacher."""
from __future__ import annotations

import numpy as np


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Non-interpolated AP: the mean of precision at each positive's rank, tied scores
    taken together (one threshold per distinct score). NaN when there is no positive."""
    if not positive.any():
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    scores, positive = scores[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # end of each tie group
    tp = np.cumsum(positive)[last]
    precision = tp / (last + 1)
    recall_gain = np.diff(np.r_[0, tp]) / positive.sum()
    return float(np.sum(precision * recall_gain))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64: the scores AP ranks (shared so ties match everywhere)."""
    logits = np.asarray(logits, dtype=np.float64)
    scores = np.exp(logits - logits.max(1, keepdims=True))
    return scores / scores.sum(1, keepdims=True)


def classification_metrics(logits: np.ndarray, labels: np.ndarray,
                           teacher_logits: np.ndarray | None = None) -> dict:
    """top1, top5, mAP (mean over classes present of one-vs-rest AP on softmax scores),
    per-class AP and, given teacher logits, top-1 agreement with the teacher."""
    logits = np.asarray(logits, dtype=np.float64)
    scores = softmax(logits)
    ranked = np.argsort(-logits, axis=1, kind="stable")
    k = min(5, logits.shape[1])
    ap = [average_precision(scores[:, c], labels == c) for c in range(logits.shape[1])]
    out = {"top1": float(np.mean(ranked[:, 0] == labels)),
           "top5": float(np.mean((ranked[:, :k] == labels[:, None]).any(1))),
           "mAP": float(np.nanmean(ap)), "per_class_ap": [None if np.isnan(a) else a for a in ap],
           "count": int(len(labels))}
    if teacher_logits is not None:
        out["teacher_agreement"] = float(np.mean(ranked[:, 0] == np.argmax(teacher_logits, 1)))
    return out

"""Teacher-like logits and their distributions, for the tests of the cache's encodings."""
from __future__ import annotations

import numpy as np
import torch


def teacher_like_logits(n: int, classes: int, seed: int = 0) -> np.ndarray:
    """Logits with one confident class and a few runners-up per row over a broad tail, as a
    trained teacher's (top-1 probability about 0.5 to 0.99 at T = 1)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (n, classes))
    rows = np.arange(n)[:, None]
    logits[rows, rng.random((n, classes)).argsort(1)[:, :5]] += rng.uniform(3, 7, (n, 5))
    logits[rows[:, 0], rng.integers(classes, size=n)] += rng.uniform(7, 12, n)
    return logits.astype(np.float32)


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return torch.softmax(torch.as_tensor(logits, dtype=torch.float64) / temperature, -1).numpy()

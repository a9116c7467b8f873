"""Running a Net over stored images seen through given views, in batches, without grad."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.views import render, whole_views


@torch.inference_mode()
def predict(net: torch.nn.Module, images: np.ndarray, params: np.ndarray, image_size: int,
            batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(logits, features) as float32 for uint8 images (B, S, S, 3) under views (B, 5)."""
    net.eval()
    logits, features = [], []
    for start in range(0, len(images), batch_size):
        stop = start + batch_size
        out = net(render(images[start:stop], params[start:stop], image_size))
        logits.append(out[0].float().numpy())
        features.append(out[1].float().numpy())
    return np.concatenate(logits), np.concatenate(features)


def predict_rows(net: torch.nn.Module, store, rows: np.ndarray, image_size: int,
                 batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(logits, features) for image-store rows under the whole-image eval view, read a
    batch at a time so memory does not grow with the split."""
    parts = [predict(net, store.images[rows[i:i + batch_size]],
                     whole_views(len(rows[i:i + batch_size]), store.size), image_size, batch_size)
             for i in range(0, len(rows), batch_size)]
    if not parts:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

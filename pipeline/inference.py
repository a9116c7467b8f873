"""Running a Net over stored images seen through given views, in batches, without grad."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.views import render, whole_views


@torch.inference_mode()
def predict(net: torch.nn.Module, images: np.ndarray, params: np.ndarray, image_size: int,
            batch_size: int = 256, stages: tuple[int, ...] = ()) -> list[np.ndarray]:
    """[logits, features, *maps of `stages`] as float32 for uint8 images (B, S, S, 3) under
    views (B, 5)."""
    net.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        x = render(images[start:start + batch_size], params[start:start + batch_size], image_size)
        logits, features, *maps = net.forward_with_stages(x, stages) if stages else net(x)
        outputs.append([t.float().numpy() for t in (logits, features, *(maps[0] if maps else []))])
    return [np.concatenate(column) for column in zip(*outputs)]


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

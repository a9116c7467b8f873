"""Running a Net over stored images seen through given views, in batches, without grad."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from pipeline.teacher.views import render, whole_views


def view_batches(read: Callable[[np.ndarray], np.ndarray], rows: np.ndarray, params: np.ndarray,
                 image_size: int, batch_size: int) -> Iterator[torch.Tensor]:
    """Rendered views (len(rows), V, 5) of image-store rows, in order, about batch_size
    views at a time (whole images per batch); the images are read a batch at a time."""
    views = params.shape[1]
    per = max(1, batch_size // views)
    for start in range(0, len(rows), per):
        pixels = read(rows[start:start + per])
        yield render(pixels, params[start:start + per].reshape(-1, 5), image_size,
                     np.repeat(np.arange(len(pixels)), views))


@torch.inference_mode()
def predict(net: torch.nn.Module, read: Callable[[np.ndarray], np.ndarray], rows: np.ndarray,
            params: np.ndarray, image_size: int, batch_size: int = 256,
            stages: tuple[int, ...] = ()) -> list[np.ndarray]:
    """[logits, features, *maps of `stages`] as float32, row-major over (rows, views), for
    uint8 images read by `read(rows)` under views (len(rows), V, 5). Serial on purpose:
    reading and rendering the next batch on a thread while the teacher runs gained nothing
    on 2 cores (the forward already uses both) and raised the peak memory by 140 MB."""
    net.eval()
    outputs = []
    for x in view_batches(read, rows, params, image_size, batch_size):
        logits, features, *maps = net.forward_with_stages(x, stages) if stages else net(x)
        outputs.append([t.float().numpy() for t in (logits, features, *(maps[0] if maps else []))])
    return [np.concatenate(column) for column in zip(*outputs)]


def predict_rows(net: torch.nn.Module, store, rows: np.ndarray, image_size: int,
                 batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(logits, features) for image-store rows under the whole-image eval view."""
    if len(rows) == 0:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    logits, features = predict(net, store.images.take, rows, whole_views(len(rows), store.size)[:, None],
                               image_size, batch_size)
    return logits, features

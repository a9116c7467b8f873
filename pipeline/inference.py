"""Running a Net over stored images seen through given views, in batches, without grad."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from pipeline.data.imagestore import Images, pixels
from pipeline.device import Precision
from pipeline.training.prefetch import prefetch
from pipeline.views import render, whole_views

FP32 = Precision("fp32")


def view_batches(images: Images, rows: np.ndarray, params: np.ndarray, image_size: int, batch_size: int,
                 device: torch.device = torch.device("cpu")) -> Iterator[torch.Tensor]:
    """Rendered views (len(rows), V, 5) of image-store rows, in order, about batch_size
    views at a time (whole images per batch); the images (imagestore.store_images) are
    read a batch at a time and rendered on `device`."""
    views = params.shape[1]
    per = max(1, batch_size // views)
    for start in range(0, len(rows), per):
        batch = pixels(images, rows[start:start + per], device)
        yield render(batch, params[start:start + per].reshape(-1, 5), image_size,
                     np.repeat(np.arange(len(batch)), views))


@torch.inference_mode()
def predict(net: torch.nn.Module, images: Images, rows: np.ndarray, params: np.ndarray, image_size: int,
            batch_size: int = 256, stages: tuple[int, ...] = (), precision: Precision = FP32) -> list[np.ndarray]:
    """[logits, features, *maps of `stages`] as float32, row-major over (rows, views), for
    rows of a store's uint8 images (imagestore.store_images) under views (len(rows), V, 5),
    on the net's device.
    On the CPU it is serial on purpose: reading and rendering the next batch on a thread
    while the teacher runs gained nothing on 2 cores (the forward already uses both) and
    raised the peak memory by 140 MB. On a GPU the next batch is read meanwhile."""
    net.eval()
    device = next(net.parameters()).device
    batches = view_batches(images, rows, params, image_size, batch_size, device)
    outputs = []
    for x in batches if device.type == "cpu" else prefetch(batches):
        with precision.autocast(device):
            logits, features, *maps = net.forward_with_stages(x, stages) if stages else net(x)
        outputs.append([t.float().cpu().numpy() for t in (logits, features, *(maps[0] if maps else []))])
    return [np.concatenate(column) for column in zip(*outputs)]


def predict_rows(net: torch.nn.Module, store, rows: np.ndarray, image_size: int,
                 batch_size: int = 256, precision: Precision = FP32) -> tuple[np.ndarray, np.ndarray]:
    """(logits, features) for image-store rows under the whole-image eval view."""
    if len(rows) == 0:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    logits, features = predict(net, store.images, rows, whole_views(len(rows), store.size)[:, None],
                               image_size, batch_size, precision=precision)
    return logits, features

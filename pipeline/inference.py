"""Running a Net over stored images seen through given views, in batches, without grad."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from pipeline.data.imagestore import Images, pixels
from pipeline.runtime.device import Precision, prefetch_on_device
from pipeline.runtime.prefetch import consume_in_background
from pipeline.views.records import CROP_AND_FLIP, Recipe, image_rows, partner_rows, render, whole_views

FP32 = Precision("fp32")


def overlapped(device: torch.device) -> bool:
    """Whether predict runs its stages side by side, on threads: on an accelerator. On the
    CPU it is serial on purpose: reading and rendering the next batch on a thread while the
    teacher runs gained nothing on 2 cores (the forward already uses both) and raised the
    peak memory by 140 MB."""
    return device.type != "cpu"


def view_batches(images: Images, rows: np.ndarray, params: np.ndarray, image_size: int, batch_size: int,
                 device: torch.device = torch.device("cpu"), recipe: Recipe = CROP_AND_FLIP) -> Iterator[torch.Tensor]:
    """Rendered views (len(rows), V, recipe.width) of image-store rows, in order, about
    batch_size views at a time (whole images per batch); the images (imagestore.store_images),
    with the partners of mixed views, are read a batch at a time and rendered on `device`. On
    an accelerator the next batch is read, decoded and copied there on a thread meanwhile
    (device.prefetch_on_device; see overlapped)."""
    loads = _loads(images, rows, params, batch_size, device, recipe)
    for batch, records, image_of, partner_of in prefetch_on_device(loads, device) if overlapped(device) else loads:
        yield render(batch, records, image_size, image_of, recipe, partner_of)


def _loads(images: Images, rows: np.ndarray, params: np.ndarray, batch_size: int, device: torch.device,
           recipe: Recipe) -> Iterator[tuple]:
    views = params.shape[1]
    per = max(1, batch_size // views)
    for start in range(0, len(rows), per):
        records = params[start:start + per].reshape(-1, params.shape[2])
        own = np.repeat(rows[start:start + per], views)
        read, image_of, partner_of = image_rows(own, partner_rows(records, recipe))
        yield pixels(images, read, device), records, image_of, partner_of


@torch.inference_mode()
def predict(net: torch.nn.Module, images: Images, rows: np.ndarray, params: np.ndarray, image_size: int,
            batch_size: int = 256, stages: tuple[int, ...] = (), precision: Precision = FP32,
            recipe: Recipe = CROP_AND_FLIP) -> list[np.ndarray]:
    """[logits, features, *maps of `stages`] as float32, row-major over (rows, views), for
    rows of a store's uint8 images (imagestore.store_images) under views (len(rows), V,
    recipe.width), on the net's device.
    Where `overlapped`, three stages run side by side: a thread reads and decodes the next
    batch and copies it to the device, the device renders and runs this one, and another
    thread brings the previous batch's outputs back to the host, so this thread queues the
    next forward without waiting for the last one to finish. Either way the batches, and so
    the outputs, are the same."""
    net.eval()
    device = next(net.parameters()).device
    outputs: list[list[np.ndarray]] = []

    def to_host(batch: list[torch.Tensor]) -> None:
        outputs.append([t.cpu().numpy() for t in batch])

    batches = view_batches(images, rows, params, image_size, batch_size, device, recipe)
    forwards = _forwards(net, batches, stages, precision)
    if overlapped(device):
        consume_in_background(forwards, to_host)
    else:
        for batch in forwards:
            to_host(batch)
    return [np.concatenate(column) for column in zip(*outputs)]


def _forwards(net: torch.nn.Module, batches: Iterator[torch.Tensor], stages: tuple[int, ...],
              precision: Precision) -> Iterator[list[torch.Tensor]]:
    """[logits, features, *maps] of each batch, float32, where the net runs."""
    device = next(net.parameters()).device
    for x in batches:
        with precision.autocast(device):
            logits, features, *maps = net.forward_with_stages(x, stages) if stages else net(x)
        yield [t.float() for t in (logits, features, *(maps[0] if maps else []))]


def predict_rows(net: torch.nn.Module, store, rows: np.ndarray, image_size: int,
                 batch_size: int = 256, precision: Precision = FP32) -> tuple[np.ndarray, np.ndarray]:
    """(logits, features) for image-store rows under the whole-image eval view."""
    if len(rows) == 0:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    logits, features = predict(net, store.images, rows, whole_views(len(rows), store.size)[:, None],
                               image_size, batch_size, precision=precision)
    return logits, features

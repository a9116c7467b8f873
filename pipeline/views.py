"""Views of a stored image: a crop box and a flip, drawn from a seeded generator and
rendered identically wherever they are replayed (teacher pass, student loader, tests).

A view is 5 numbers in store pixels: (y, x, h, w, flip).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torchvision.ops import roi_align

SCALE = (0.35, 1.0)      # crop area as a fraction of the image
RATIO = (3 / 4, 4 / 3)   # crop aspect ratio w / h


def whole_views(n: int, size: int) -> np.ndarray:
    """(n, 5) whole-image, unflipped views: the deterministic eval view."""
    return np.tile(np.array([0, 0, size, size, 0], dtype=np.float32), (n, 1))


def random_views(seed: int, keys: np.ndarray, views: int, size: int) -> np.ndarray:
    """(len(keys), views, 5) random-resized-crop boxes and flips. Each key (an image row,
    or a row mixed with an epoch) has its own generator, so any subset of rows is drawn
    identically in any order or process."""
    out = np.empty((len(keys), views, 5), dtype=np.float32)
    for i, key in enumerate(np.asarray(keys).tolist()):
        rng = np.random.default_rng([seed, *np.atleast_1d(key)])
        out[i] = [_random_box(rng, size) for _ in range(views)]
    return out


def _random_box(rng: np.random.Generator, size: int) -> list[float]:
    area = size * size
    for _ in range(10):
        target = area * rng.uniform(*SCALE)
        aspect = math.exp(rng.uniform(math.log(RATIO[0]), math.log(RATIO[1])))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= size and 0 < h <= size:
            y, x = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
            return [y, x, h, w, float(rng.random() < 0.5)]
    return [0, 0, size, size, float(rng.random() < 0.5)]


def render(images: np.ndarray | torch.Tensor, params: np.ndarray, out: int,
           image_of: np.ndarray | None = None) -> torch.Tensor:
    """Crop, resize (bilinear, area-averaged when shrinking) and flip uint8 (B, S, S, 3)
    images by (N, 5) views, view i of image `image_of[i]` (default: of image i); returns
    float (N, 3, out, out) in [0, 1] on the images' device. Several views of one image
    convert it once."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float().div_(255)
    p = torch.as_tensor(params, dtype=torch.float32, device=x.device)
    index = (torch.arange(len(p), device=x.device) if image_of is None
             else torch.as_tensor(image_of, device=x.device))
    boxes = torch.stack([index.to(torch.float32),
                         p[:, 1], p[:, 0], p[:, 1] + p[:, 3], p[:, 0] + p[:, 2]], dim=1)
    crops = roi_align(x, boxes, output_size=out, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    # Not a masked assignment: indexing by a mask waits for the device (it counts the flips on the host).
    crops = torch.where((p[:, 4] > 0.5)[:, None, None, None], crops.flip(-1), crops)
    return crops.contiguous(memory_format=torch.channels_last)

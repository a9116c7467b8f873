"""RandAugment's operations on rendered views, batched, each image with its own
magnitude, on any device (float images in [0, 1]; strengths as timm's rand_augment_ops).

An operation is stored as two numbers: its index in NAMES and a signed magnitude m in
[-1, 1] (RandAugment's M out of 10, with a random sign); operations without a direction
read |m|, those without a strength ignore it. An image's result never depends on the
other images of its batch.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.runtime.device import to_device

FILL = 0.5  # what geometric operations uncover: mid grey

NAMES = ("identity", "autocontrast", "equalize", "posterize", "solarize",
         "color", "contrast", "brightness", "sharpness",
         "rotate", "shear_x", "shear_y", "translate_x", "translate_y")
GEOMETRIC = frozenset(NAMES[9:])  # one resampling of the images, each by its own matrix; last, so sorted together
_GROUP = np.array(["geometric" if name in GEOMETRIC else name for name in NAMES])  # what runs as one call


def draw(rng: np.random.Generator, count: int, magnitude: int) -> list[float]:
    """`count` operations as 2 * count numbers: index, signed magnitude (M of 10)."""
    out = []
    for _ in range(count):
        out += [float(rng.integers(len(NAMES))), magnitude / 10 * (1.0 if rng.random() < 0.5 else -1.0)]
    return out


def apply(images: torch.Tensor, ops: np.ndarray) -> torch.Tensor:
    """`images` (B, 3, H, W) float in [0, 1], each through its operations `ops` (B, 2N) as
    `draw` writes them, in order. For each of the N, the images are sorted by operation, so
    that each operation (the geometric ones together) runs once on a slice of them."""
    for slot in range(ops.shape[1] // 2):
        order = np.argsort(ops[:, 2 * slot], kind="stable")
        kinds, m = ops[order, 2 * slot].astype(np.int64), ops[order, 2 * slot + 1]
        x = images[to_device(torch.from_numpy(order), images.device)]
        strength = to_device(torch.from_numpy(m.astype(np.float32)), images.device)[:, None, None, None]
        names = _GROUP[kinds]
        starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]])
        for a, b in zip(starts.tolist(), [*starts[1:].tolist(), len(names)]):
            if names[a] == "geometric":
                x[a:b] = _geometric(x[a:b], kinds[a:b], m[a:b])
            elif names[a] != "identity":
                x[a:b] = _OPS[names[a]](x[a:b], strength[a:b]).clamp_(0, 1)
        images = x[to_device(torch.from_numpy(np.argsort(order)), images.device)]
    return images


def _blend(x: torch.Tensor, degenerate: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """PIL's enhance: factor 1 + 0.9 m between the degenerate image (0) and beyond x (> 1)."""
    factor = 1 + 0.9 * m
    return x * factor + degenerate * (1 - factor)


def _posterize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    levels = torch.exp2(8 - torch.round(4 * m.abs()))  # 8 bits down to 4
    return (x * levels).floor_().clamp_(max=levels - 1) / levels


def _tf():
    """torchvision's v2 functional ops, imported at first use: torchvision's import takes seconds
    (torch._dynamo comes with it), which a command that renders no view, a no-op run, skips."""
    from torchvision.transforms.v2 import functional
    return functional


# name -> operation(images (n, 3, H, W), signed magnitudes (n, 1, 1, 1)), but for the geometric ones.
_OPS = {
    "autocontrast": lambda x, m: _tf().autocontrast(x),
    "equalize": lambda x, m: _tf().equalize(x),
    "posterize": _posterize,
    "solarize": lambda x, m: torch.where(x >= 1 - m.abs(), 1 - x, x),
    "color": lambda x, m: _blend(x, _tf().rgb_to_grayscale(x), m),
    "contrast": lambda x, m: _blend(x, _tf().rgb_to_grayscale(x).mean((-3, -2, -1), keepdim=True), m),
    "brightness": lambda x, m: _blend(x, torch.zeros_like(x), m),
    "sharpness": lambda x, m: _blend(x, _tf().adjust_sharpness(x, 0.0), m),  # factor 0: the smoothed image
}


def _matrix(name: str, m: float) -> list[list[float]]:
    """Where output point (x, y) reads the input, in coordinates -1..1 about the centre."""
    if name == "rotate":
        a = math.radians(30 * m)
        return [[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]]
    s, t = 0.3 * m, 0.9 * m  # timm: shear factor 0.3, translation 45% of the side (0.9 of -1..1)
    return {"shear_x": [[1.0, s, 0.0], [0.0, 1.0, 0.0]], "shear_y": [[1.0, 0.0, 0.0], [s, 1.0, 0.0]],
            "translate_x": [[1.0, 0.0, t], [0.0, 1.0, 0.0]], "translate_y": [[1.0, 0.0, 0.0], [0.0, 1.0, t]]}[name]


def _geometric(x: torch.Tensor, kinds: np.ndarray, m: np.ndarray) -> torch.Tensor:
    """Rotations, shears and translations, bilinear, the uncovered area FILL."""
    theta = np.array([_matrix(NAMES[k], v) for k, v in zip(kinds.tolist(), m.tolist())], dtype=np.float32)
    grid = F.affine_grid(to_device(torch.from_numpy(theta), x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x - FILL, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + FILL

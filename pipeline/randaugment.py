"""RandAugment's operations on rendered views, batched, on any device (torchvision's
functional v2 on float images in [0, 1]).

An operation is stored as two numbers: its index in OPS and a signed magnitude in
[-1, 1] (RandAugment's M out of 10, with a random sign); operations without a direction
read its absolute value, those without a strength ignore it.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from pipeline.device import to_device

FILL = [0.5, 0.5, 0.5]  # what geometric operations uncover: mid grey


def _affine(x: torch.Tensor, angle: float = 0.0, translate: tuple[int, int] = (0, 0),
            shear: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    return F.affine(x, angle=angle, translate=list(translate), scale=1.0, shear=list(shear), fill=FILL)


def _shear(m: float) -> float:
    return math.degrees(math.atan(0.3 * m))  # timm's 0.3 shear factor at M = 10


def _shift(x: torch.Tensor, m: float) -> int:
    return round(0.45 * m * x.shape[-1])  # timm's 45% of the side at M = 10


# name -> operation(images (B, 3, H, W), signed magnitude m in [-1, 1]); strengths as timm's rand_augment_ops.
OPS = {
    "identity": lambda x, m: x,
    "autocontrast": lambda x, m: F.autocontrast(x),
    "equalize": lambda x, m: F.equalize(x),
    "rotate": lambda x, m: _affine(x, angle=30.0 * m),
    "posterize": lambda x, m: F.posterize(x, 8 - round(4 * abs(m))),
    "solarize": lambda x, m: F.solarize(x, 1.0 - abs(m)),
    "color": lambda x, m: F.adjust_saturation(x, 1 + 0.9 * m),
    "contrast": lambda x, m: F.adjust_contrast(x, 1 + 0.9 * m),
    "brightness": lambda x, m: F.adjust_brightness(x, 1 + 0.9 * m),
    "sharpness": lambda x, m: F.adjust_sharpness(x, 1 + 0.9 * m),
    "shear_x": lambda x, m: _affine(x, shear=(_shear(m), 0.0)),
    "shear_y": lambda x, m: _affine(x, shear=(0.0, _shear(m))),
    "translate_x": lambda x, m: _affine(x, translate=(_shift(x, m), 0)),
    "translate_y": lambda x, m: _affine(x, translate=(0, _shift(x, m))),
}
NAMES = list(OPS)


def draw(rng: np.random.Generator, count: int, magnitude: int) -> list[float]:
    """`count` operations as 2 * count numbers: index, signed magnitude (M of 10)."""
    out = []
    for _ in range(count):
        out += [float(rng.integers(len(NAMES))), magnitude / 10 * (1.0 if rng.random() < 0.5 else -1.0)]
    return out


def apply(images: torch.Tensor, ops: np.ndarray) -> torch.Tensor:
    """`images` (B, 3, H, W) float in [0, 1], each through its operations `ops` (B, 2N) as
    `draw` writes them, in order. Images with the same operation and magnitude go through it
    together; an image's result does not depend on the others in its batch."""
    for slot in range(ops.shape[1] // 2):
        pairs = ops[:, 2 * slot:2 * slot + 2]
        kinds, group = np.unique(pairs, axis=0, return_inverse=True)
        for k, (op, m) in enumerate(kinds.tolist()):
            if NAMES[int(op)] == "identity":
                continue
            index = to_device(torch.from_numpy(np.flatnonzero(group.reshape(-1) == k)), images.device)
            images[index] = OPS[NAMES[int(op)]](images[index], m).clamp_(0, 1)
    return images

"""Views of a stored image, drawn from a seeded generator and rendered identically wherever
they are replayed (teacher pass, student loader, tests).

A view is a record of float32 numbers. Crop and flip alone (the default Recipe): 5 numbers
in store pixels, (y, x, h, w, flip). A Recipe adds, in this order:
    2N  RandAugment's N operations (pipeline/views/randaugment.py), applied after crop and flip
    and, when the recipe mixes (mixup or cutmix):
    5 + 2N  the partner's own view: another training image of the same store shard
    6   partner store row, blend, box (y0, x0, y1, x1) as fractions of the rendered side:
        inside the box the image is (1 - blend) * own + blend * partner's (mixup: the
        whole image, blend = 1 - lambda; cutmix: a box, blend = 1; unmixed: blend = 0).
The partner's label weighs blend * the box's share of the pixels (`partner_weight`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from cache.storage.fingerprint import changed_settings
from pipeline.runtime.device import to_device
from pipeline.views import randaugment

SCALE = (0.35, 1.0)      # crop area as a fraction of the image
RATIO = (3 / 4, 4 / 3)   # crop aspect ratio w / h
VIEW = 5                 # y, x, h, w, flip
MIX = 6                  # partner row, blend, y0, x0, y1, x1
FLOAT32_EXACT = 1 << 24  # integers float32 holds exactly: the partner rows a record can name


@dataclass(frozen=True)
class Recipe:
    """How a training view is drawn beyond crop and flip; the default is crop and flip only.
    Mixing follows timm's Mixup, per image: with probability mix_prob a view is mixed, by
    cutmix with probability switch_prob when both are on, lambda ~ Beta(alpha, alpha)."""
    randaugment: tuple[int, int] = (0, 0)  # N operations per view, magnitude M of 10
    mixup: float = 0.0        # mixup's Beta alpha; 0 = none
    cutmix: float = 0.0       # cutmix's Beta alpha; 0 = none
    mix_prob: float = 1.0
    switch_prob: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "randaugment", tuple(self.randaugment))  # read back from JSON as a list

    @property
    def mixes(self) -> bool:
        return self.mix_prob > 0 and (self.mixup > 0 or self.cutmix > 0)

    @property
    def own(self) -> int:
        """Numbers of one image's view: crop, flip and its operations."""
        return VIEW + 2 * self.randaugment[0]

    @property
    def width(self) -> int:
        """Numbers of a record."""
        return 2 * self.own + MIX if self.mixes else self.own

    def fingerprint_fields(self) -> dict:
        """The recipe as a fingerprint holds it: nothing for crop and flip alone, the views of
        every run before recipes existed. As JSON reads it back: a cache's identity holds it."""
        changed = changed_settings({"recipe": self}, {"recipe": Recipe()})
        return {key: {**asdict(recipe), "randaugment": list(recipe.randaugment)} for key, recipe in changed.items()}


CROP_AND_FLIP = Recipe()


@dataclass(frozen=True)
class Partners:
    """Where a mixed view's partner comes from: another training row of its store shard, so
    that a loader reading whole shards (the shards order) holds it already."""
    rows: np.ndarray  # every training row of the store, ascending
    shard_rows: int   # the image store's

    def __post_init__(self) -> None:
        if len(self.rows) and self.rows[-1] >= FLOAT32_EXACT:
            raise ValueError(f"store row {self.rows[-1]}: a record (float32) holds partner rows below "
                             f"{FLOAT32_EXACT:,}; mixing in a larger store needs another record format")

    def draw(self, rng: np.random.Generator, row: int) -> int:
        shard = row // self.shard_rows * self.shard_rows
        lo, hi = np.searchsorted(self.rows, [shard, shard + self.shard_rows])
        if hi - lo < 2:
            return row
        pick = lo + int(rng.integers(hi - lo - 1))
        return int(self.rows[pick if pick < np.searchsorted(self.rows, row) else pick + 1])


def whole_views(n: int, size: int) -> np.ndarray:
    """(n, 5) whole-image, unflipped views: the deterministic eval view."""
    return np.tile(np.array([0, 0, size, size, 0], dtype=np.float32), (n, 1))


def random_views(seed: int, keys: np.ndarray, views: int, size: int, recipe: Recipe = CROP_AND_FLIP,
                 partners: Partners | None = None) -> np.ndarray:
    """(len(keys), views, recipe.width) records. Each key (an image row, or a row mixed with
    an epoch) has its own generator, so any subset of rows is drawn identically in any order
    or process. A recipe that mixes needs `partners`."""
    if recipe.mixes and partners is None:
        raise ValueError("a recipe with mixup or cutmix needs the partners' rows")
    out = np.empty((len(keys), views, recipe.width), dtype=np.float32)
    for i, key in enumerate(np.asarray(keys).tolist()):
        key = np.atleast_1d(key).tolist()
        rng = np.random.default_rng([seed, *key])
        out[i] = [_record(rng, size, recipe, partners, key[0]) for _ in range(views)]
    return out


def _record(rng: np.random.Generator, size: int, recipe: Recipe, partners: Partners | None, row: int) -> list[float]:
    n, m = recipe.randaugment
    record = _random_box(rng, size) + randaugment.draw(rng, n, m)
    if not recipe.mixes:
        return record
    partner = partners.draw(rng, row)
    record += _random_box(rng, size) + randaugment.draw(rng, n, m)
    if rng.random() >= recipe.mix_prob:
        return record + [row, 0.0, 0.0, 0.0, 0.0, 0.0]
    cut = recipe.cutmix > 0 and (recipe.mixup <= 0 or rng.random() < recipe.switch_prob)
    lam = float(rng.beta(*(2 * [recipe.cutmix if cut else recipe.mixup])))
    if not cut:
        return record + [partner, 1 - lam, 0.0, 0.0, 1.0, 1.0]
    side, (cy, cx) = math.sqrt(1 - lam), rng.random(2)  # timm's rand_bbox, as fractions
    return record + [partner, 1.0, max(cy - side / 2, 0.0), max(cx - side / 2, 0.0),
                     min(cy + side / 2, 1.0), min(cx + side / 2, 1.0)]


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


def partner_rows(records: np.ndarray, recipe: Recipe) -> np.ndarray | None:
    """The store rows of (N, width) records' partners; None for a recipe that does not mix."""
    return records[:, 2 * recipe.own].astype(np.int64) if recipe.mixes else None


def image_rows(rows: np.ndarray, partners: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The store rows to read for views of `rows` mixed with `partners` (None: unmixed), each
    once, and where in them each view's image and partner lie (views.render's image_of and
    partner_of)."""
    if partners is None:
        read, image_of = np.unique(rows, return_inverse=True)
        return read, image_of.reshape(-1), None
    read, where = np.unique(np.concatenate([rows, partners]), return_inverse=True)
    return read, where[:len(rows)], where[len(rows):]


def partner_weight(records: np.ndarray, recipe: Recipe, out: int) -> np.ndarray:
    """(N,) float32: the share of the partner's label in each record's mixed label (0 unmixed)."""
    if not recipe.mixes:
        return np.zeros(len(records), np.float32)
    blend, box = _mix(records, recipe, out)
    return (blend * (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]) / (out * out)).astype(np.float32)


def _mix(records: np.ndarray, recipe: Recipe, out: int) -> tuple[np.ndarray, np.ndarray]:
    """Blend (N,) and box (N, 4) in rendered pixels: the one rounding of the box, for the
    pixels and the labels alike."""
    mix = records[:, 2 * recipe.own:]
    return mix[:, 1], np.rint(mix[:, 2:6] * out).astype(np.int64)


def render(images: np.ndarray | torch.Tensor, params: np.ndarray, out: int, image_of: np.ndarray | None = None,
           recipe: Recipe = CROP_AND_FLIP, partner_of: np.ndarray | None = None) -> torch.Tensor:
    """Render (N, recipe.width) records from uint8 (B, S, S, 3) `images`: crop, resize
    (bilinear, area-averaged when shrinking), flip and RandAugment view i of image
    `image_of[i]` (default: of image i), and mix it with its partner's view of image
    `partner_of[i]`. Returns float (N, 3, out, out) in [0, 1] on the images' device.
    Several views of one image convert it once."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float().div_(255)
    params = np.asarray(params, dtype=np.float32)
    index = np.arange(len(params)) if image_of is None else np.asarray(image_of)
    if not recipe.mixes:
        return _view(x, params, index, out).contiguous(memory_format=torch.channels_last)
    # The views and their partners' in one pass: half the calls of two.
    both = np.concatenate([params[:, :recipe.own], params[:, recipe.own:2 * recipe.own]])
    rendered, partner = _view(x, both, np.concatenate([index, partner_of]), out).chunk(2)
    blend, box = (to_device(torch.from_numpy(a), x.device) for a in _mix(params, recipe, out))
    side = torch.arange(out, device=x.device)
    rows = (side >= box[:, 0:1]) & (side < box[:, 2:3])
    cols = (side >= box[:, 1:2]) & (side < box[:, 3:4])
    weight = (rows[:, :, None] & cols[:, None, :]).unsqueeze(1) * blend[:, None, None, None]
    return torch.lerp(rendered, partner, weight).contiguous(memory_format=torch.channels_last)


def _view(x: torch.Tensor, params: np.ndarray, image_of: np.ndarray, out: int) -> torch.Tensor:
    """Crop, resize, flip and the operations of (N, own) views of images `image_of` of x."""
    p = to_device(torch.from_numpy(np.ascontiguousarray(params[:, :VIEW])), x.device)
    index = to_device(torch.from_numpy(image_of.astype(np.float32)), x.device)
    boxes = torch.stack([index, p[:, 1], p[:, 0], p[:, 1] + p[:, 3], p[:, 0] + p[:, 2]], dim=1)
    from torchvision.ops import roi_align  # at first use: see randaugment._tf
    crops = roi_align(x, boxes, output_size=out, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    # Not a masked assignment: indexing by a mask waits for the device (it counts the flips on the host).
    crops = torch.where((p[:, 4] > 0.5)[:, None, None, None], crops.flip(-1), crops)
    return randaugment.apply(crops, params[:, VIEW:]) if params.shape[1] > VIEW else crops

"""Embedded default data set: stick-figure human actions, rendered deterministically.

Each image shows one articulated figure (torso, head, two-segment arms and legs) doing one of
eight actions. A pose is a per-class range for every joint angle plus per-sample Gaussian
jitter, so neighbouring actions (walking/running, waving/jumping, sitting/kicking) overlap.
Scale, position, small rotation, facing direction, limb thickness and colours vary; figures are
always darker than their background (silhouettes against a lit scene: with random polarity a
from-scratch ConvNeXt stays at chance for hundreds of CPU steps, see docs/design.md); background
clutter (lines, ellipses, rectangles, limb-like strokes), occluders in front of the figure, a
partial second figure at the border, lighting changes and pixel noise make the task non-trivial:
it rewards local, translation-equivariant features (a small CNN learns it, raw-pixel templates
do not).

Every image is a pure function of (seed, index), so any subset renders identically in any
order or process.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from cache.storage.fingerprint import digest
from pipeline.data.source import Item, Items

GENERATOR_VERSION = 2
SUPERSAMPLE = 3  # draw at 3x, then box-downsample: smooth, antialiased limbs

CLASSES = ["standing", "walking", "running", "jumping", "waving", "sitting", "kicking", "bending"]

# Joint directions in degrees: 0 points down, 90 forward (the way the figure faces), 180 up.
# Angles are absolute, not relative to the parent bone; "a" is the front limb, "b" the back one.
# Order: torso, upper/lower arm a, upper/lower arm b, thigh/shin a, thigh/shin b.
_STAND_LEGS = ((0, 12), (-5, 8), (-12, 0), (-8, 5))
POSES: dict[str, tuple[tuple[float, float], ...]] = {
    "standing": ((174, 186), (0, 20), (-5, 25), (-20, 0), (-25, 5)) + _STAND_LEGS,
    "walking": ((172, 182), (15, 40), (25, 60), (-40, -15), (-35, -10),
                (15, 35), (0, 20), (-35, -15), (-50, -20)),
    "running": ((152, 170), (30, 70), (100, 150), (-75, -35), (0, 45),
                (45, 80), (-10, 20), (-45, -20), (-115, -65)),
    "jumping": ((170, 190), (115, 160), (135, 185), (-160, -115), (-185, -135),
                (30, 65), (-40, -5), (15, 50), (-55, -20)),
    "waving": ((174, 186), (85, 140), (150, 200), (-15, 10), (-15, 15)) + _STAND_LEGS,
    "sitting": ((165, 185), (10, 40), (60, 100), (-5, 25), (50, 95),
                (75, 100), (-10, 15), (70, 95), (-15, 10)),
    "kicking": ((182, 205), (60, 110), (60, 120), (-110, -50), (-120, -60),
                (65, 100), (65, 110), (-10, 5), (-10, 5)),
    "bending": ((95, 130), (-10, 25), (-10, 25), (-20, 15), (-20, 15),
                (-5, 15), (-10, 10), (-15, 5), (-10, 10)),
}
JITTER_DEG = 7.0  # per-joint noise on top of the class range; makes neighbouring classes overlap
# Difficulty: figure height as a fraction of the image, limb width relative to the head,
# clutter shapes behind and in front of the figure, chance of a second, cut-off figure.
HEIGHT = (0.7, 0.95)
LIMB_WIDTH = (0.6, 1.0)
CLUTTER_BEHIND = (1, 4)
CLUTTER_FRONT = (0, 2)
DISTRACTOR = 0.15

# Bone lengths in torso units, same order as the angles (torso, arm a, forearm a, ...).
_LENGTHS = np.array([1.0, 0.48, 0.42, 0.48, 0.42, 0.58, 0.55, 0.58, 0.55])
_NECK, _HEAD_R = 0.12, 0.2
# Joints: 0 hip, 1 neck, 2-3 elbow/hand a, 4-5 elbow/hand b, 6-7 knee/foot a, 8-9 knee/foot b.
# Each angle moves from a parent joint to a new one; drawing order puts back limbs behind.
_PARENTS = (0, 1, 2, 1, 4, 0, 6, 0, 8)
_DRAW_ORDER = (3, 4, 7, 8, 0, 1, 2, 5, 6)  # indices into the bones, back to front


def render(seed: int, index: int, label: int, size: int) -> np.ndarray:
    """The image for (seed, index) showing action `label`, as a (size, size, 3) uint8 array."""
    rng = np.random.default_rng([seed, index])
    canvas = size * SUPERSAMPLE
    img = _background(rng, canvas)
    draw = ImageDraw.Draw(img)
    bg_lum = _luminance(np.asarray(img.resize((1, 1), Image.BOX), float)[0, 0])
    colour = _darker(rng, bg_lum)
    joints, head_r = _place(rng, _skeleton(rng, label), canvas, HEIGHT)
    width = head_r * rng.uniform(*LIMB_WIDTH)  # limb thickness relative to figure scale

    _clutter(draw, rng, int(rng.integers(*CLUTTER_BEHIND)), canvas, head_r * 2.5, width, colour, 0.22)
    if rng.random() < DISTRACTOR:
        _distractor(draw, rng, canvas, head_r, width, bg_lum)
    _draw_figure(draw, rng, joints, head_r, width, colour)
    # Occluders in front of the figure: small, so the pose stays readable.
    _clutter(draw, rng, int(rng.integers(*CLUTTER_FRONT)), canvas, head_r * 2.5, width, colour, 0.08)

    small = np.asarray(img.reduce(SUPERSAMPLE), np.float32)
    gain = rng.uniform(0.7, 1.2) * rng.uniform(0.88, 1.12, 3)
    noisy = small * gain + rng.uniform(-30, 30) + rng.normal(0, rng.uniform(2, 12), small.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _skeleton(rng: np.random.Generator, label: int) -> np.ndarray:
    """Joint positions in torso units (hip at the origin, y down); the head centre comes last."""
    lo, hi = np.array(POSES[CLASSES[label]], float).T
    angles = np.radians(rng.uniform(lo, hi) + rng.normal(0, JITTER_DEG, len(lo)))
    bones = np.stack([np.sin(angles), np.cos(angles)], 1) * (_LENGTHS * rng.uniform(0.9, 1.1, 9))[:, None]
    joints = np.zeros((11, 2))
    for bone, parent in enumerate(_PARENTS):
        joints[bone + 1] = joints[parent] + bones[bone]
    tilt = angles[0] + np.radians(rng.normal(0, 15))
    joints[10] = joints[1] + (_NECK + _HEAD_R) * np.array([np.sin(tilt), np.cos(tilt)])
    return joints


def _place(rng: np.random.Generator, joints: np.ndarray, canvas: int,
           height: tuple[float, float], centre: np.ndarray | None = None,
           ) -> tuple[np.ndarray, float]:
    """Mirror, rotate, scale and move the skeleton onto the canvas; returns pixels and head radius."""
    joints = joints * [rng.choice([-1, 1]), 1]
    theta = np.radians(rng.normal(0, 8))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    joints = joints @ rot.T
    lo, hi = joints.min(0) - _HEAD_R, joints.max(0) + _HEAD_R
    scale = rng.uniform(*height) * canvas / (hi - lo).max()
    extent = (hi - lo) * scale
    if centre is None:  # keep the figure in frame, give or take a few percent
        slack = np.maximum(canvas * 1.08 - extent, 0)
        centre = extent / 2 - canvas * 0.04 + rng.uniform(0, 1, 2) * slack
    return (joints - (lo + hi) / 2) * scale + centre, _HEAD_R * scale


def _draw_figure(draw: ImageDraw.ImageDraw, rng: np.random.Generator, joints: np.ndarray,
                 head_r: float, width: float, colour: np.ndarray) -> None:
    """Limbs as round-capped thick lines, each with its own thickness and a slight tint."""
    for bone in _DRAW_ORDER:
        w = width * rng.uniform(0.7, 1.3) * (1.3 if bone == 0 else 1.0)
        tint = _rgb(colour + rng.normal(0, 12, 3) - (25 if bone in (2, 3, 6, 7) else 0))
        p, q = joints[_PARENTS[bone]], joints[bone + 1]
        _stroke(draw, [p, q], w, tint)
    hx, hy = joints[10]
    r = head_r * rng.uniform(0.85, 1.15)
    if rng.random() < 0.25:  # outlined head
        draw.ellipse([hx - r, hy - r, hx + r, hy + r], outline=_rgb(colour), width=max(1, round(width * 0.6)))
    else:
        draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=_rgb(colour))


def _distractor(draw: ImageDraw.ImageDraw, rng: np.random.Generator, canvas: int,
                head_r: float, width: float, bg_lum: float) -> None:
    """A second figure in a random pose, mostly cut off by the left or right border."""
    x = rng.choice([rng.uniform(-0.2, 0.05), rng.uniform(0.95, 1.2)]) * canvas
    centre = np.array([x, rng.uniform(0.2, 0.8) * canvas])
    joints, r = _place(rng, _skeleton(rng, int(rng.integers(len(CLASSES)))), canvas, (0.5, 0.9), centre)
    _draw_figure(draw, rng, joints, r, width * r / head_r, _darker(rng, bg_lum))


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, n: int, canvas: int,
             limb: float, width: float, figure_colour: np.ndarray, max_half: float) -> None:
    """Random lines, ellipses, rectangles and limb-like two-segment strokes.

    Some share the figure's colour so that colour alone cannot find the figure.
    """
    for _ in range(n):
        colour = _rgb(figure_colour if rng.random() < 0.3 else rng.uniform(0, 255, 3))
        c = rng.uniform(0, canvas, 2)
        half = rng.uniform(0.03, max_half, 2) * canvas
        box = [*(c - half), *(c + half)]
        kind = rng.integers(4)
        if kind == 0:
            end = c + rng.normal(0, 2 * max_half * canvas, 2)
            draw.line([*c, *end], fill=colour, width=max(1, round(width * rng.uniform(0.3, 1.2))))
        elif kind == 1 or kind == 2:
            shape = draw.ellipse if kind == 1 else draw.rectangle
            if rng.random() < 0.5:
                shape(box, fill=colour)
            else:
                shape(box, outline=colour, width=max(1, round(width * rng.uniform(0.3, 1.0))))
        else:
            a = rng.uniform(0, 2 * np.pi, 2)
            steps = limb * rng.uniform(0.6, 1.2, (2, 1)) * np.stack([np.cos(a), np.sin(a)], 1)
            _stroke(draw, [c, c + steps[0], c + steps.sum(0)], width * rng.uniform(0.7, 1.3), colour)


def _stroke(draw: ImageDraw.ImageDraw, points: list[np.ndarray], width: float, colour: tuple) -> None:
    """A thick polyline with round joints and caps (PIL's own line ends are square)."""
    w, r = max(1, round(width)), width / 2
    draw.line([tuple(p) for p in points], fill=colour, width=w)
    for x, y in points:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)


def _background(rng: np.random.Generator, canvas: int) -> Image.Image:
    """A smooth gradient: a random light base colour with a different tint in each corner."""
    corners = rng.uniform(110, 255, 3) + rng.normal(0, 35, (2, 2, 3))
    tiny = Image.fromarray(np.clip(corners, 0, 255).astype(np.uint8), "RGB")
    return tiny.resize((canvas, canvas), Image.BILINEAR)


def _darker(rng: np.random.Generator, lum: float, margin: float = 50) -> np.ndarray:
    """A random colour whose luminance is at least `margin` below `lum`."""
    colour = rng.uniform(1, 255, 3)
    target = rng.uniform(0, max(lum - margin, 1))
    return colour * min(1.0, target / _luminance(colour))


def _luminance(rgb: np.ndarray) -> float:
    return float(rgb @ [0.299, 0.587, 0.114])


def _rgb(colour: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(colour, 0, 255))


@dataclass
class SyntheticSource:
    """Generated action figures; pure function of (seed, index).

    Train items take indices 0..n_train-1 and test items the next n_test; label = index % classes.
    """

    seed: int = 0
    train_per_class: int = 200
    test_per_class: int = 100
    size: int = 64
    classes: list[str] = field(default_factory=lambda: list(CLASSES), init=False)

    def __post_init__(self) -> None:
        if self.size < 8 or self.train_per_class < 0 or self.test_per_class < 0:
            raise ValueError(f"bad SyntheticSource arguments: {self}")

    def items(self) -> Items:
        k = len(self.classes)
        n_train = self.train_per_class * k
        train = [Item(f"train_{i:05d}", i % k, "train", i) for i in range(n_train)]
        test = [Item(f"test_{i:05d}", (n_train + i) % k, "test", n_train + i)
                for i in range(self.test_per_class * k)]
        return Items.of(train + test)

    def load(self, item: Item) -> Image.Image:
        return Image.fromarray(render(self.seed, int(item.key), item.label, self.size), "RGB")

    def fingerprint(self) -> str:
        args = {"generator": "synthetic", "version": GENERATOR_VERSION, "seed": self.seed,
                "train_per_class": self.train_per_class, "test_per_class": self.test_per_class,
                "size": self.size}
        return digest(args)

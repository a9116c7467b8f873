"""Generated image folders of small JPEGs, the scale benchmark's data: a flat one of N images
in C classes, and one in ImageNet-1k's own layout and shape, which `imagefolder:` reads as
the real one (train/ and val/, 1,000 classes of 732 to 1,300 images):

    python -m pipeline.bench.folders --layout imagenet --images 1281167 --out /data/imagenet-shape

Each class folder is written under a hidden name and renamed into place whole, so a rerun
skips the finished classes and redoes a killed one; its pixels depend only on the seed and
the class, never on what was written before.
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import simplejpeg

from pipeline.data.synthetic import CLASSES as ACTIONS
from pipeline.data.synthetic import render

SHAPE = (40, 48)  # height, width of a generated image
IMAGENET_TRAIN = 1_281_167  # ImageNet-1k's training images
IMAGENET_CLASSES = 1000
IMAGENET_RANGE = (732, 1300)  # its smallest and largest class, training images
IMAGENET_VAL = 50  # validation images a class
SHORT_CLASSES = 100  # classes of the generated shape below IMAGENET_RANGE's largest


def smooth_images(rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` uint8 (H, W, 3) images: random colours on a coarse grid, interpolated
    bilinearly, so they compress like photographs rather than like noise."""
    coarse = rng.uniform(0, 255, (count, 4, 5, 3))
    rows, cols = (np.clip(np.linspace(0, n - 1, side)[:, None] - np.arange(n), -1, 1) for n, side
                  in zip(coarse.shape[1:3], SHAPE))
    up_rows, up_cols = 1 - np.abs(rows), 1 - np.abs(cols)  # hat weights: linear interpolation
    return np.einsum("hi,nijc,wj->nhwc", up_rows, coarse, up_cols, optimize=True).astype(np.uint8, order="C")


def write_class(final: Path, names: list[str], draw: Callable[[], Iterable[np.ndarray]]) -> int:
    """The images `draw()` gives, as JPEGs `names`, in the class folder `final` unless it is
    there already; returns the files written."""
    if final.is_dir():
        return 0
    partial = final.with_name(f".{final.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name, image in zip(names, draw(), strict=True):
        (partial / name).write_bytes(simplejpeg.encode_jpeg(image, quality=85, colorspace="RGB"))
    partial.rename(final)
    return len(names)


def generate(folder: Path, images: int, classes: int, seed: int = 0) -> int:
    """A flat image folder of `images` JPEGs, `folder/cNNNN/NNNNNNN.jpg`, image i in class i
    mod `classes`, of smooth random colours; returns the files written."""
    written, digits = 0, len(str(images - 1))
    for label in range(classes):
        numbers = range(label, images, classes)
        written += write_class(folder / f"c{label:04d}", [f"{number:0{digits}d}.jpg" for number in numbers],
                               partial(smooth_images, np.random.default_rng([seed, label]), len(numbers)))
    return written


def apportion(weights: np.ndarray, total: int) -> np.ndarray:
    """`total` split in proportion to `weights` into whole numbers, the largest remainders
    rounded up: exact where every share is whole."""
    quota = np.asarray(weights, float) * total / np.sum(weights)
    whole = np.floor(quota).astype(np.int64)
    whole[np.argsort(whole - quota, kind="stable")[:total - whole.sum()]] += 1
    return whole


def imagenet_class_sizes() -> np.ndarray:
    """Training images of each of ImageNet-1k's classes in its shape, smallest first: one class
    of 732, then SHORT_CLASSES - 1 whose shortfall from 1,300 falls quadratically, then full
    classes of 1,300; 1,281,167 in all."""
    smallest, largest = IMAGENET_RANGE
    missing = largest * IMAGENET_CLASSES - IMAGENET_TRAIN - (largest - smallest)
    shortfall = apportion(np.linspace(1, 0, SHORT_CLASSES, endpoint=False)[1:] ** 2, missing)
    return largest - np.concatenate([[largest - smallest], shortfall, np.zeros(IMAGENET_CLASSES - SHORT_CLASSES, int)])


def class_sizes(images: int, classes: int) -> np.ndarray:
    """Training images of each of `classes`, `images` in all: ImageNet's class sizes taken at
    evenly spaced ranks, scaled; ImageNet's own at 1,281,167 in 1,000."""
    full = imagenet_class_sizes()
    return apportion(full[(2 * np.arange(classes) + 1) * len(full) // (2 * classes)], images)


def val_per_class(images: int, classes: int) -> int:
    """ImageNet's 50 validation images a class, scaled as the mean class size is (at least 1)."""
    return max(1, round(IMAGENET_VAL * images * IMAGENET_CLASSES / (classes * IMAGENET_TRAIN)))


def class_figure(seed: int, index: int, label: int, layout: np.ndarray) -> np.ndarray:
    """Image `index` of class `label`: the demo's figure of action `label` mod 8, cropped to
    SHAPE, averaged with the class's own colour layout: classes differ in pose and colour."""
    top = (SHAPE[1] - SHAPE[0]) // 2
    figure = render(seed, index, label % len(ACTIONS), SHAPE[1])[top:top + SHAPE[0]]
    return ((figure.astype(np.uint16) + layout) // 2).astype(np.uint8)


def write_imagenet_class(job: tuple[Path, list[str], int, int, int]) -> int:
    """One class folder of generate_imagenet: (folder, names, label, first image index, seed)."""
    final, names, label, first, seed = job
    layout = smooth_images(np.random.default_rng([seed, label]), 1)[0]
    return write_class(final, names, lambda: (class_figure(seed, first + i, label, layout) for i in range(len(names))))


def imagenet_jobs(folder: Path, images: int, classes: int, seed: int) -> list[tuple[Path, list[str], int, int, int]]:
    """generate_imagenet's class folders, train/ then val/: classes named like WordNet ids
    (seeded, sorted), of class_sizes in a seeded order; validation images numbered 1 to V
    across classes in a seeded order, as ImageNet's are."""
    rng = np.random.default_rng(seed)
    wnids = [f"n{number:08d}" for number in np.sort(rng.choice(10 ** 8, classes, replace=False))]
    sizes = rng.permutation(class_sizes(images, classes))
    starts = np.concatenate([[0], np.cumsum(sizes)])  # each image draws its own figure: a unique index
    val = val_per_class(images, classes)
    numbers = np.sort(rng.permutation(val * classes).reshape(classes, val) + 1, axis=1)
    train = [(folder / "train" / wnid, [f"{wnid}_{n}.JPEG" for n in range(1, size + 1)], label, int(start), seed)
             for label, (wnid, size, start) in enumerate(zip(wnids, sizes, starts))]
    return train + [(folder / "val" / wnid, [f"ILSVRC2012_val_{n:08d}.JPEG" for n in numbers[label]], label,
                     images + label * val, seed) for label, wnid in enumerate(wnids)]


def generate_imagenet(folder: Path, images: int = IMAGENET_TRAIN, classes: int = IMAGENET_CLASSES, seed: int = 0,
                      processes: int | None = None, report: Callable[[int, int], None] | None = None) -> int:
    """A folder in ImageNet's layout, `train/<wnid>/<wnid>_<n>.JPEG` (`images` in all) and
    `val/<wnid>/ILSVRC2012_val_<8 digits>.JPEG`, written by `processes` (all cores when
    None); `report(classes done, of)` after each class folder. Returns the files written."""
    jobs = imagenet_jobs(folder, images, classes, seed)
    written = 0
    # forkserver: a fork of a process with threads (a test runner's, a notebook's) can hang
    with ProcessPoolExecutor(processes or os.cpu_count(), mp_context=get_context("forkserver")) as pool:
        for done, count in enumerate(pool.map(write_imagenet_class, jobs), 1):
            written += count
            if report:
                report(done, len(jobs))
    return written


def main(argv: list[str] | None = None) -> int:
    """Write the folder the command line names; returns the files written."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.folders", description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", choices=["imagenet", "flat"], default="imagenet")
    parser.add_argument("--images", type=int, default=IMAGENET_TRAIN, help="training images (flat: all images)")
    parser.add_argument("--classes", type=int, default=IMAGENET_CLASSES)
    parser.add_argument("--out", type=Path, required=True, help="the folder to write (or complete)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.layout == "flat":
        written = generate(args.out, args.images, args.classes, args.seed)
    else:
        def report(done: int, total: int) -> None:
            if done % 50 == 0 or done == total:
                print(f"{time.strftime('%H:%M:%S')} {done}/{total} class folders", flush=True)
        written = generate_imagenet(args.out, args.images, args.classes, args.seed, report=report)
    print(f"wrote {written} files in {args.out}")
    return written


if __name__ == "__main__":
    main()

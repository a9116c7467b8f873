"""The real data set readers and `open_source`, which picks one from a spec string.

Every reader keeps only paths and options (so it pickles cheaply for dask workers), lists its
items by reading the data set's own index files, and decodes one image per `load`.
"""
from __future__ import annotations

import inspect
import logging
import math
import os
import random
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image, ImageOps

from cache.storage.fingerprint import digest_lines
from pipeline.data.source import SPLITS, BadImage, BadSource, Item, Source

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def open_source(spec: str, **options: Any) -> Source:
    """The source named by `spec`: "synthetic", "stanford40:PATH", "imagefolder:PATH" or
    "hdf5:FILE". `options` are keyword arguments of that source's class; an unknown kind,
    a missing path or an unknown option raises BadSource."""
    kind, _, path = spec.partition(":")
    valid = "valid kinds: synthetic, stanford40:PATH, imagefolder:PATH, hdf5:FILE"
    if kind == "synthetic" and not path:
        from pipeline.data.synthetic import SyntheticSource  # lazy: only this kind needs the renderer
        cls, args = SyntheticSource, []
    elif kind in _PATH_KINDS:
        cls, args = _PATH_KINDS[kind], [Path(path).expanduser()]
        if not path or not args[0].exists():
            raise BadSource(f"source {spec!r}: {kind} needs an existing path after the colon ({valid})")
    else:
        raise BadSource(f"unknown source {spec!r} ({valid})")
    accepted = list(inspect.signature(cls).parameters)[len(args):]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise BadSource(f"source {spec!r}: unknown option(s) {', '.join(unknown)}; "
                        f"{kind} accepts: {', '.join(accepted)}")
    return cls(*args, **options)


def carve_validation(items: list[Item], fraction: float, seed: int) -> list[Item]:
    """`items` with a seeded, stratified `fraction` of each class's train items moved to "val".

    Unchanged when `fraction` is 0 or when some items already are "val". Each class keeps at
    least one train item. The result depends only on the item ids, labels and `seed`, not on
    the input order, which it preserves."""
    if any(item.split == "val" for item in items):
        return items
    return _move_fraction(items, "train", "val", fraction, seed)


def shuffle_items(items: list[Item], seed: int) -> list[Item]:
    """`items` in a seeded random order: neighbouring rows of a store written in it are
    of any class, which reading the store a few shards at a time needs."""
    return [items[i] for i in np.random.default_rng([seed, 1]).permutation(len(items))]


def read_image(path: Path) -> Image.Image:
    """The image file at `path` fully decoded, upright (EXIF orientation applied) and RGB;
    transparent pixels are composited on black. Raises BadImage naming the file."""
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so truncated data fails here and not in a later resize
            image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise BadImage(f"{path}: cannot decode image ({error})") from error
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I"):  # 16-bit grey: keep the high byte, as convert() would clip to white
        image = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8))
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        rgb = Image.new("RGB", rgba.size)
        rgb.paste(rgba, mask=rgba.getchannel("A"))
        return rgb
    return image.convert("RGB")


class Stanford40:
    """Stanford 40 Actions in its own layout under `root`: JPEGImages/, XMLAnnotations/ and
    ImageSplits/ (actions.txt, train.txt, test.txt). Official train/test split, no val;
    classes in actions.txt order; labels from the file name prefix "<action>_<NNN>.jpg".

    With `crop_person`, `load` returns the annotated person box widened by `context` (a
    fraction of the box's width and height on each side), clipped to the image."""

    def __init__(self, root: str | Path, crop_person: bool = False, context: float = 0.2):
        if context < 0:
            raise ValueError(f"context must be >= 0, got {context}")
        self.root = Path(root)
        self.crop_person = crop_person
        self.context = context
        self.classes = self._read_actions()

    def items(self) -> list[Item]:
        """train.txt then test.txt, each in file order; BadSource for a name whose action is not
        in actions.txt, a missing image (or annotation, with crop_person), or an image listed twice."""
        folders = {"JPEGImages": ".jpg", **({"XMLAnnotations": ".xml"} if self.crop_person else {})}
        present = {f"{folder}/{name}" for folder in folders for name in os.listdir(self._dir(folder))}
        label = {name: i for i, name in enumerate(self.classes)}
        items: dict[str, Item] = {}
        for split in ("train", "test"):
            split_file = self._dir("ImageSplits") / f"{split}.txt"
            for name in _lines(split_file):
                stem = name.removesuffix(".jpg")
                action = stem.rpartition("_")[0]
                if action not in label:
                    raise BadSource(f"{split_file}: {name!r} is not '<action>_<NNN>.jpg' with an "
                                    f"action from actions.txt")
                wanted = {f"{folder}/{stem}{suffix}" for folder, suffix in folders.items()}
                if wanted - present:
                    raise BadSource(f"{split_file} names {name}, but {', '.join(sorted(wanted - present))} "
                                    f"is missing under {self.root}")
                if stem in items:
                    raise BadSource(f"{split_file}: {name} is listed twice in the split files")
                items[stem] = Item(stem, label[action], split, name)
        return list(items.values())

    def load(self, item: Item) -> Image.Image:
        image = read_image(self.root / "JPEGImages" / str(item.key))
        if not self.crop_person:
            return image
        x0, y0, x1, y1 = self.person_box(item, image.size)
        dx, dy = (x1 - x0) * self.context, (y1 - y0) * self.context
        width, height = image.size
        return image.crop((max(0, math.floor(x0 - dx)), max(0, math.floor(y0 - dy)),
                           min(width, math.ceil(x1 + dx)), min(height, math.ceil(y1 + dy))))

    def person_box(self, item: Item, size: tuple[int, int]) -> tuple[float, float, float, float]:
        """The annotated person box (x0, y0, x1, y1) in the pixels of the image as stored,
        whose (width, height) is `size`.

        The XML box is 1-based and inclusive (xmin is never 0 in the real data, xmax often
        equals the width) in the original image's pixels; it becomes the continuous span
        [xmin - 1, xmax] scaled by size / <size>."""
        xml = self.root / "XMLAnnotations" / f"{Path(str(item.key)).stem}.xml"
        try:
            root = ET.parse(xml).getroot()
            box = root.find("object/bndbox")
            xmin, ymin, xmax, ymax = (float(box.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax"))
            width, height = float(root.findtext("size/width")), float(root.findtext("size/height"))
        except (OSError, ET.ParseError, AttributeError, TypeError, ValueError) as error:
            raise BadSource(f"{xml}: needs <object><bndbox> xmin, ymin, xmax, ymax and "
                            f"<size> width, height ({error})") from error
        if not (xmin <= xmax and ymin <= ymax and width > 0 and height > 0):
            raise BadSource(f"{xml}: empty box ({xmin}, {ymin}, {xmax}, {ymax}) or size ({width}, {height})")
        # Multiply before dividing: a box edge on the image border then maps exactly onto it.
        return ((xmin - 1) * size[0] / width, (ymin - 1) * size[1] / height,
                xmax * size[0] / width, ymax * size[1] / height)

    def fingerprint(self) -> str:
        return _fingerprint("stanford40", {"crop_person": self.crop_person, "context": self.context},
                            _tree_stats(self.root))

    def _read_actions(self) -> list[str]:
        # "<action><tabs><count>" with tab runs and a stray trailing tab: split on any whitespace.
        actions = self._dir("ImageSplits") / "actions.txt"
        rows = [line.split() for line in _lines(actions)[1:]]
        if not rows or any(len(row) != 2 for row in rows):
            raise BadSource(f"{actions}: expected a header line, then '<action> <count>' lines")
        return [row[0] for row in rows]

    def _dir(self, name: str) -> Path:
        path = self.root / name
        if not path.is_dir():
            raise BadSource(f"{self.root}: no {name}/ folder; is this a Stanford 40 copy?")
        return path


class ImageFolder:
    """Images in `root/<class>/<image>`, either under train/ and test/ (and optionally val/)
    folders, which must hold the same classes, or in one tree whose items go to test with a
    seeded, stratified `holdout` fraction per class and to train otherwise.

    Classes are the sorted class folder names. Hidden entries and non-image files are ignored
    (their count is logged); a class folder without images raises BadSource."""

    def __init__(self, root: str | Path, holdout: float = 0.25, seed: int = 0):
        if not 0 <= holdout < 1:
            raise ValueError(f"holdout must be in [0, 1), got {holdout}")
        self.root = Path(root)
        self.holdout = holdout
        self.seed = seed
        if not self.root.is_dir():
            raise BadSource(f"{self.root} is not a folder")
        self.classes = self._classes()

    def items(self) -> list[Item]:
        """Per split folder, per class, images sorted by name; the id and key are the path
        relative to root."""
        folders = self._split_folders()
        items, ignored = [], 0
        for split, folder in folders:
            for label, name in enumerate(self.classes):
                files = sorted(entry.name for entry in os.scandir(folder / name) if entry.is_file())
                # String operations, not pathlib: a million files cost seconds in Path objects.
                images = [f for f in files
                          if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES]
                ignored += len(files) - len(images)
                if not images:
                    raise BadSource(f"{folder / name}: class folder holds no images; add some, or remove the folder")
                rel = (folder / name).relative_to(self.root).as_posix()
                items += [Item(key, label, split, key) for key in (f"{rel}/{f}" for f in images)]
        if ignored:
            log.info("%s: ignored %d hidden or non-image files", self.root, ignored)
        if len(folders) == 1:
            items = _move_fraction(items, "train", "test", self.holdout, self.seed)
        return items

    def load(self, item: Item) -> Image.Image:
        return read_image(self.root / str(item.key))

    def fingerprint(self) -> str:
        return _fingerprint("imagefolder", {"holdout": self.holdout, "seed": self.seed},
                            _tree_stats(self.root))

    def _split_folders(self) -> list[tuple[str, Path]]:
        present = [split for split in SPLITS if (self.root / split).is_dir()]
        if not present:
            return [("train", self.root)]
        if "train" not in present or "test" not in present:
            raise BadSource(f"{self.root}: has {'/, '.join(present)}/ but needs both train/ and "
                            f"test/ (or no split folders at all)")
        return [(split, self.root / split) for split in present]

    def _classes(self) -> list[str]:
        found = {split: sorted(entry.name for entry in os.scandir(folder)
                               if entry.is_dir() and not entry.name.startswith("."))
                 for split, folder in self._split_folders()}
        first, classes = next(iter(found.items()))
        if not classes:
            raise BadSource(f"{self.root}: no class folders")
        for split, other in found.items():
            if other != classes:
                differ = sorted(set(classes) ^ set(other))
                raise BadSource(f"{self.root / first} and {self.root / split} hold different "
                                f"class folders: {', '.join(differ)}")
        return classes


class HDF5Source:
    """Images in one HDF5 file: dataset `images` (N, H, W, 3) uint8, `labels` (N,) integers,
    optional `split` (N,) of "train"/"val"/"test" strings or 0/1/2 (all train without it),
    class names from a `class_names` attribute (of the file or of `labels`) or dataset, else
    "class_0", "class_1", ... Layout errors raise BadSource naming the file and the dataset.

    The file is opened on first `load` in each process and never pickled."""

    def __init__(self, path: str | Path, images: str = "images", labels: str = "labels",
                 split: str = "split", class_names: str = "class_names"):
        self.path = Path(path)
        self.names = {"images": images, "labels": labels, "split": split, "class_names": class_names}
        self._file: h5py.File | None = None
        self._pid = 0
        self.classes, _ = self._index()

    def items(self) -> list[Item]:
        """One item per row, in row order; the key is the row."""
        return self._index()[1]

    def load(self, item: Item) -> Image.Image:
        if self._pid != os.getpid():  # first load here, or a forked/unpickled copy
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        try:
            return Image.fromarray(self._file[self.names["images"]][int(item.key)])
        except (OSError, ValueError, IndexError) as error:
            raise BadImage(f"{self.path}: cannot read row {item.key} of "
                           f"{self.names['images']!r} ({error})") from error

    def fingerprint(self) -> str:
        stat = self.path.stat()
        datasets: list[str] = []

        def describe(name: str, obj: h5py.HLObject) -> None:
            if isinstance(obj, h5py.Dataset):
                datasets.append(f"{name} {obj.shape} {obj.dtype}")

        with self._open() as f:
            f.visititems(describe)
        return _fingerprint("hdf5", self.names, [f"{stat.st_size} {stat.st_mtime_ns}", *datasets])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_pid": 0}

    def _index(self) -> tuple[list[str], list[Item]]:
        with self._open() as f:
            images = self._dataset(f, "images")
            if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
                self._fail("images", f"must be (N, H, W, 3) uint8, not {images.shape} {images.dtype}")
            n = images.shape[0]
            labels = self._dataset(f, "labels")[()]
            if labels.shape != (n,) or labels.dtype.kind not in "iu":
                self._fail("labels", f"must be {n} integers (one per image), "
                                     f"not {labels.shape} {labels.dtype}")
            classes = self._class_names(f, labels)
            if n and (labels.min() < 0 or labels.max() >= len(classes)):
                self._fail("labels", f"values must be in 0..{len(classes) - 1} ({len(classes)} classes), "
                                     f"found {labels.min()}..{labels.max()}")
            splits = self._splits(f, n)
        width = len(str(max(n - 1, 0)))
        return classes, [Item(f"{row:0{width}d}", int(label), split, row)
                         for row, (label, split) in enumerate(zip(labels, splits))]

    def _class_names(self, f: h5py.File, labels: np.ndarray) -> list[str]:
        name = self.names["class_names"]
        for attrs in (f.attrs, f[self.names["labels"]].attrs):
            if name in attrs:
                return _strings(attrs[name])
        if name in f:
            return _strings(f[name][()])
        return [f"class_{i}" for i in range(int(labels.max(initial=-1)) + 1)]

    def _splits(self, f: h5py.File, n: int) -> list[str]:
        if self.names["split"] not in f:
            return ["train"] * n
        raw = self._dataset(f, "split")[()]
        if raw.shape != (n,):
            self._fail("split", f"must have one entry per image ({n}), not shape {raw.shape}")
        if raw.dtype.kind in "iu":
            by_number = dict(enumerate(SPLITS))
            splits = [by_number.get(v, str(v)) for v in raw.tolist()]
        else:
            splits = _strings(raw)
        wrong = sorted(set(splits) - set(SPLITS))
        if wrong:
            self._fail("split", f"values must be train/val/test or 0/1/2, found {wrong[:5]}")
        return splits

    def _open(self) -> h5py.File:
        try:
            return h5py.File(self.path, "r")
        except OSError as error:
            raise BadSource(f"{self.path}: cannot open as HDF5 ({error})") from error

    def _dataset(self, f: h5py.File, role: str) -> h5py.Dataset:
        if not isinstance(f.get(self.names[role]), h5py.Dataset):
            self._fail(role, "is missing (pass the dataset's name as an option)")
        return f[self.names[role]]

    def _fail(self, role: str, problem: str) -> None:
        raise BadSource(f"{self.path}: dataset {self.names[role]!r} {problem}")


_PATH_KINDS = {"stanford40": Stanford40, "imagefolder": ImageFolder, "hdf5": HDF5Source}


def _move_fraction(items: list[Item], source: str, target: str, fraction: float, seed: int) -> list[Item]:
    """`items` with round(fraction * n) of each class's n `source` items, at most n - 1, moved to
    `target`: a per-class seeded sample of the sorted ids, so independent of the input order."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    by_label: dict[int, list[str]] = defaultdict(list)
    for item in items:
        if item.split == source:
            by_label[item.label].append(item.id)
    moved = set()
    for label, ids in by_label.items():
        k = min(round(fraction * len(ids)), len(ids) - 1)
        moved.update(random.Random(f"{seed}:{label}").sample(sorted(ids), k))  # str seeds are stable
    return [Item(item.id, item.label, target, item.key) if item.id in moved else item for item in items]


def _lines(path: Path) -> list[str]:
    """Non-blank lines of a text file, stripped; BadSource naming the file when it is missing."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise BadSource(f"{path}: cannot read ({error})") from error
    return [line.strip() for line in text.splitlines() if line.strip()]


def _strings(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(values).tolist()]


def _tree_stats(root: Path) -> Iterator[str]:
    """"<relative name> <size> <mtime_ns>" for every file under root, in a stable order: a
    folder's files by name, then its subfolders by name, depth first (os.walk's order; links
    to folders are not followed). One scandir per folder and the entries' own stat: a third
    of os.walk + os.stat + relpath's time on 200,000 files."""
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel)) as found:
            entries = sorted(found, key=lambda entry: entry.name)
        folders = []
        for entry in entries:
            if entry.is_dir():
                if not entry.is_symlink():
                    folders.append(f"{rel}{entry.name}/")
                continue
            stat = entry.stat()
            yield f"{rel}{entry.name} {stat.st_size} {stat.st_mtime_ns}"
        stack.extend(reversed(folders))


def _fingerprint(kind: str, options: dict[str, Any], lines: Iterable[str]) -> str:
    return digest_lines([kind, options], lines)

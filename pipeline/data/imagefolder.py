"""The image folder reader: images in one folder per class, optionally under split folders."""
from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.files import collector_paused, read_image, source_fingerprint, tree_files
from pipeline.data.source import SPLITS, BadSource, Item, Items, strings
from pipeline.data.splits import move_fraction, moved_count

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
# (root, holdout, seed) -> (folder mtimes, _walk()'s fingerprint and files)
_walked: dict[tuple, tuple[list[int], tuple[str, dict[str, tuple[int, int]]]]] = {}
RECENT_NS = 2 * 10 ** 9  # a folder changed this recently may change again within its mtime's tick


class ImageFolder:
    """Images in `root/<class>/<image>`, either under train/ and test/ (and optionally val/)
    folders, or ImageNet's train/ and val/ (val/ read as test), which must hold the same
    classes, or in one tree whose items go to test with a seeded, stratified `holdout`
    fraction per class and to train otherwise.

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

    def items(self) -> Items:
        """Per split folder, per class, images sorted by name; the id (and key) is the path
        relative to root. The paths go into their array as they are listed, a class folder
        at a time: a million of them are never a list."""
        folders: list[tuple[int, int, int]] = []  # (split, label, images) of each class folder

        def paths() -> Iterator[str]:
            for split, label, rel, images in self._class_images():
                folders.append((SPLITS.index(split), label, len(images)))
                yield from (f"{rel}/{name}" for name in sorted(images))

        with collector_paused():
            ids = strings(paths())
        splits, labels, counts = np.array(folders, dtype=np.int64).reshape(-1, 3).T
        items = Items(ids, np.repeat(labels, counts).astype(np.int32), np.repeat(splits, counts).astype(np.uint8), None)
        return move_fraction(items, "train", "test", self.holdout, self.seed) if self._one_tree() else items

    def split_counts(self) -> Counter[tuple[str, int]]:
        """Images per (split, label), as items() has them, without making the items: counted
        from the walk that makes the fingerprint, once a process (_walked)."""
        files = self._walked()[1]
        counts, ignored = Counter(), 0
        for split, label, folder in self._class_folders():
            rel = folder.relative_to(self.root).as_posix() + "/"
            images, found = files[rel] if rel in files else _tally(_file_names(folder))  # a link: not walked
            if not images:
                raise _no_images(folder)
            counts[split, label] = images
            ignored += found - images
        _log_ignored(self.root, ignored)
        if self._one_tree():
            for (_, label), n in list(counts.items()):
                test = moved_count(n, self.holdout)
                counts["train", label], counts["test", label] = n - test, test
        return +counts  # no zero counts, as counted from the items

    def load(self, item: Item) -> Image.Image:
        return read_image(self.root / str(item.key))

    def fingerprint(self) -> str:
        return self._walked()[0]

    def _walked(self) -> tuple[str, dict[str, tuple[int, int]]]:
        """_walk(), once a process (the configuration check counts, then the store's fingerprint
        and the auto order ask: one walk of a million files, not three) while no folder's mtime
        moves, which adding, removing or renaming a file does; not kept while a folder is new,
        as a second change within its clock's tick would leave its mtime as it was."""
        key, mtimes = (self.root, self.holdout, self.seed), self._folder_mtimes()
        if key not in _walked or _walked[key][0] != mtimes:
            walked = self._walk()
            if max(mtimes) > time.time_ns() - RECENT_NS:
                return walked
            _walked[key] = mtimes, walked
        return _walked[key][1]

    def _walk(self) -> tuple[str, dict[str, tuple[int, int]]]:
        """The content fingerprint (every file's name, size and mtime), and for every folder
        (relative to root, ending in "/") its image files and all its files, counted."""
        files: dict[str, tuple[int, int]] = {}

        def lines() -> Iterator[str]:
            for rel, names, stats in tree_files(self.root):
                files[rel] = _tally(names)
                yield from stats

        with collector_paused():
            fingerprint = source_fingerprint("imagefolder", {"holdout": self.holdout, "seed": self.seed}, lines())
        return fingerprint, files

    def _folder_mtimes(self) -> list[int]:
        """The mtimes of root, the split folders and the class folders."""
        splits = [folder for _, folder in self._split_folders()]
        folders = [self.root, *splits, *(folder / name for folder in splits for name in self.classes)]
        return [os.stat(folder).st_mtime_ns for folder in folders]

    def _one_tree(self) -> bool:
        """No split folders: test is a seeded holdout of each class."""
        return self._split_folders() == [("train", self.root)]

    def _split_folders(self) -> list[tuple[str, Path]]:
        """(split, folder) pairs. ImageNet's train/ and val/ without test/ read val/ as the
        test split, the one results are given on; model selection then holds out a part of
        train (carve_validation)."""
        present = [split for split in SPLITS if (self.root / split).is_dir()]
        if not present:
            return [("train", self.root)]
        if present == ["train", "val"]:
            return [("train", self.root / "train"), ("test", self.root / "val")]
        if "train" not in present or "test" not in present:
            raise BadSource(f"{self.root}: has {'/, '.join(present)}/ but needs train/ and test/, optionally "
                            f"val/, or train/ and val/ (val/ is then the test split), or no split folders at all")
        return [(split, self.root / split) for split in present]

    def _class_folders(self) -> Iterator[tuple[str, int, Path]]:
        """(split, label, folder) of each class folder."""
        for split, folder in self._split_folders():
            for label, name in enumerate(self.classes):
                yield split, label, folder / name

    def _class_images(self) -> Iterator[tuple[str, int, str, list[str]]]:
        """(split, label, class folder relative to root, its image names) for each class
        folder; a folder without images raises BadSource. Logs the files ignored."""
        ignored = 0
        for split, label, folder in self._class_folders():
            files = _file_names(folder)
            images = _images(files)
            if not images:
                raise _no_images(folder)
            ignored += len(files) - len(images)
            yield split, label, folder.relative_to(self.root).as_posix(), images
        _log_ignored(self.root, ignored)

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


def _images(names: list[str]) -> list[str]:
    """The image files among `names`, by suffix; hidden ones left out."""
    # String operations, not pathlib: a million files cost seconds in Path objects.
    return [f for f in names if not f.startswith(".") and f[f.rfind("."):].lower() in IMAGE_SUFFIXES]


def _file_names(folder: Path) -> list[str]:
    return [entry.name for entry in os.scandir(folder) if entry.is_file()]


def _tally(names: list[str]) -> tuple[int, int]:
    """(images, files) among a folder's file `names`."""
    return len(_images(names)), len(names)


def _no_images(folder: Path) -> BadSource:
    return BadSource(f"{folder}: class folder holds no images; add some, or remove the folder")


def _log_ignored(root: Path, ignored: int) -> None:
    if ignored:
        log.info("%s: ignored %d hidden or non-image files", root, ignored)

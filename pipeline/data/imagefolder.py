"""The image folder reader: images in one folder per class, optionally under split folders."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from PIL import Image

from pipeline.data.files import read_image, source_fingerprint, tree_stats
from pipeline.data.source import SPLITS, BadSource, Item
from pipeline.data.splits import move_fraction

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


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
            items = move_fraction(items, "train", "test", self.holdout, self.seed)
        return items

    def load(self, item: Item) -> Image.Image:
        return read_image(self.root / str(item.key))

    def fingerprint(self) -> str:
        return source_fingerprint("imagefolder", {"holdout": self.holdout, "seed": self.seed},
                                  tree_stats(self.root))

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

"""The Stanford 40 Actions reader, in the data set's own layout."""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image

from pipeline.data.files import read_image, read_lines, source_fingerprint, tree_stats
from pipeline.data.source import BadSource, Item, Items


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

    def items(self) -> Items:
        """train.txt then test.txt, each in file order; BadSource for a name whose action is not
        in actions.txt, a missing image (or annotation, with crop_person), or an image listed twice."""
        folders = {"JPEGImages": ".jpg", **({"XMLAnnotations": ".xml"} if self.crop_person else {})}
        present = {f"{folder}/{name}" for folder in folders for name in os.listdir(self._dir(folder))}
        label = {name: i for i, name in enumerate(self.classes)}
        items: dict[str, Item] = {}
        for split in ("train", "test"):
            split_file = self._dir("ImageSplits") / f"{split}.txt"
            for name in read_lines(split_file):
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
        return Items.of(items.values())

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
        return source_fingerprint("stanford40", {"crop_person": self.crop_person, "context": self.context},
                                  tree_stats(self.root))

    def _read_actions(self) -> list[str]:
        # "<action><tabs><count>" with tab runs and a stray trailing tab: split on any whitespace.
        actions = self._dir("ImageSplits") / "actions.txt"
        rows = [line.split() for line in read_lines(actions)[1:]]
        if not rows or any(len(row) != 2 for row in rows):
            raise BadSource(f"{actions}: expected a header line, then '<action> <count>' lines")
        return [row[0] for row in rows]

    def _dir(self, name: str) -> Path:
        path = self.root / name
        if not path.is_dir():
            raise BadSource(f"{self.root}: no {name}/ folder; is this a Stanford 40 copy?")
        return path

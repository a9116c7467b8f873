"""What every data set source provides: a list of items and a way to load one image.

A source is picklable (dask ships it to worker processes) and opens files lazily.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from PIL import Image

SPLITS = ("train", "val", "test")


@dataclass(frozen=True, slots=True)
class Item:
    """One image of a data set; `key` is whatever the source needs to load it (a path, a row)."""

    id: str
    label: int
    split: str  # one of SPLITS
    key: str | int


class Source(Protocol):
    classes: list[str]

    def items(self) -> list[Item]:
        """Every image, in a stable order; the store keeps this order."""

    def load(self, item: Item) -> Image.Image:
        """The image as RGB; raises BadImage naming the file when it cannot be read."""

    def fingerprint(self) -> str:
        """Changes whenever the source's content may have changed (names, sizes, mtimes, or hashes)."""


class BadImage(ValueError):
    """An image that cannot be decoded; the message names the file and what is wrong."""


class BadSource(ValueError):
    """A data set whose layout or metadata is wrong; the message names the file and the fix."""

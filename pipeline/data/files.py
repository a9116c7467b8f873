"""Reading a data set's own files: decoding an image, reading an index text file, and the
file listing and digest that make a source's content fingerprint."""
from __future__ import annotations

import gc
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from cache.storage.fingerprint import digest_lines
from pipeline.data.source import BadImage, BadSource


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


def read_lines(path: Path) -> list[str]:
    """Non-blank lines of a text file, stripped; BadSource naming the file when it is missing."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise BadSource(f"{path}: cannot read ({error})") from error
    return [line.strip() for line in text.splitlines() if line.strip()]


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector off for the block: a listing of a million files makes millions
    of objects, none in a cycle, which the collector would rescan again and again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def tree_stats(root: Path) -> Iterator[str]:
    """"<relative name> <size> <mtime_ns>" for every file under root, in a stable order: a
    folder's files by name, then its subfolders by name, depth first (os.walk's order; links
    to folders are not followed)."""
    for _, _, lines in tree_files(root):
        yield from lines


def tree_files(root: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    """For every folder under root in tree_stats' order: its path relative to root ("" for
    root, else ending in "/"), the names of its regular files, and its lines of tree_stats.
    One scandir per folder, and each file's stat relative to its folder's descriptor (no path
    to resolve): most of the time is the stat calls'."""
    stack = [""]
    while stack:
        rel = stack.pop()
        folder = os.open(os.path.join(root, rel), os.O_RDONLY | os.O_DIRECTORY)
        try:  # the entries' methods may stat through the descriptor: all called before it closes
            with os.scandir(folder) as found:
                entries = sorted(found, key=lambda entry: entry.name)
            lines = [f"{rel}{entry.name} {stat.st_size} {stat.st_mtime_ns}"
                     for entry in entries if not entry.is_dir() for stat in [entry.stat()]]
            files = [entry.name for entry in entries if entry.is_file()]
            stack.extend(f"{rel}{entry.name}/" for entry in reversed(entries)
                         if entry.is_dir() and not entry.is_symlink())
        finally:
            os.close(folder)
        yield rel, files, lines


def source_fingerprint(kind: str, options: dict[str, Any], lines: Iterable[str]) -> str:
    """The content fingerprint of a `kind` source opened with `options`, whose files are described
    by `lines` (in a stable order: the digest depends on it)."""
    return digest_lines([kind, options], lines)

"""The image store: one Zarr group per data set, every image decoded once, converted
to RGB, resized (shorter side, then centre crop) to a square and kept as uint8.

    images  uint8 (N, S, S, 3)   one image per chunk, many per shard
    labels  int32 (N,)
    split   uint8 (N,)           index into SPLITS; SKIPPED for an unreadable image
    ids     str   (N,)
    attrs   classes, size, source spec and fingerprint, skipped files

Every chunk carries a crc32c checksum (cache/integrity.py).

Decoding runs in parallel on dask, one shard per task, resumable after a kill.
"""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import numpy as np
import zarr
from PIL import Image, ImageOps

from cache import blocks
from cache.integrity import CHECKSUMMED, read_all
from cache.reader import DEFAULT_BUDGET, Rows
from pipeline.data.source import SPLITS, BadImage, Item, Source

STORE_VERSION = 2  # 2: crc32c on every chunk
SKIPPED = 255
log = logging.getLogger(__name__)


def square(image: Image.Image, size: int) -> np.ndarray:
    """Shorter side to `size`, centre crop to a square, as (size, size, 3) uint8."""
    return np.asarray(ImageOps.fit(image.convert("RGB"), (size, size), Image.Resampling.BICUBIC))


def _write_shard(source: Source, items: tuple[Item, ...], path: str, size: int, skip_bad: bool,
                 block: tuple) -> None:
    """One shard's work; dask gets it as a partial, picklable for process and cluster workers."""
    _, start, stop = block
    out = np.zeros((stop - start, size, size, 3), dtype=np.uint8)
    skipped = []
    for i, item in enumerate(items[start:stop]):
        try:
            out[i] = square(source.load(item), size)
        except BadImage as err:
            if not skip_bad:
                raise
            log.warning("skipping %s", err)
            skipped.append({"row": start + i, "id": item.id, "error": str(err)})
    zarr.open_array(f"{path}/images", mode="r+")[start:stop] = out
    blocks.mark_done(path, block, skipped)


def write_image_store(source: Source, items: list[Item], path: str | Path, size: int,
                      attrs: dict, on_bad_image: str = "fail", scheduler: str = "threads",
                      workers: int = 1, shard_rows: int = 256, progress=None) -> dict:
    """Write (or resume) the store at `path`; return its manifest. `on_bad_image` is
    "fail" (stop, naming the file) or "skip" (record the file and leave its row out)."""
    if on_bad_image not in ("fail", "skip"):
        raise ValueError(f"on_bad_image = {on_bad_image!r}: use 'fail' or 'skip'")
    path, n = str(path), len(items)
    group = zarr.open_group(path, mode="a")
    if "images" not in group:
        group.create_array("images", shape=(n, size, size, 3), dtype="uint8",
                           chunks=(1, size, size, 3), shards=(shard_rows, size, size, 3), **CHECKSUMMED)
    work = blocks.shard_blocks(n, shard_rows, "images")
    todo = blocks.pending(path, work)
    log.info("image store %s: %d of %d shards to write", path, len(todo), len(work))
    # A partial, not a dataclass: dask walks a dataclass's fields, here every Item, for each
    # shard's task, which took longer than decoding Stanford 40 itself.
    write = partial(_write_shard, source, tuple(items), path, size, on_bad_image == "skip")
    blocks.run_blocks(write, todo, scheduler, workers, progress)

    skipped = [s for info in blocks.block_infos(path, work) for s in info]
    split = np.array([SPLITS.index(item.split) for item in items], dtype=np.uint8)
    split[[s["row"] for s in skipped]] = SKIPPED
    for name, data in (("labels", np.array([item.label for item in items], dtype=np.int32)),
                       ("split", split), ("ids", np.array([item.id for item in items], dtype=np.dtypes.StringDType()))):
        group.create_array(name, data=data, overwrite=True, **CHECKSUMMED)
    manifest = {**attrs, "version": STORE_VERSION, "classes": list(source.classes), "size": size,
                "count": n, "skipped": skipped,
                "split_counts": {s: int((split == i).sum()) for i, s in enumerate(SPLITS)}}
    group.attrs.update(manifest)
    blocks.finish(path, manifest)
    return manifest


class ImageStore:
    """A finished image store, read for training and evaluation."""

    def __init__(self, path: str | Path, budget: int = DEFAULT_BUDGET):
        manifest = blocks.read_manifest(path)
        if manifest is None:
            raise FileNotFoundError(f"{path} is not a finished image store (no manifest.json); "
                                    "run PrepareDataset for this data set")
        group = zarr.open_group(str(path), mode="r")
        self.path, self.manifest = Path(path), manifest
        self.classes: list[str] = manifest["classes"]
        self.size: int = manifest["size"]
        self.labels = read_all(group["labels"]).astype(np.int64)
        self.split = read_all(group["split"])
        self.ids = read_all(group["ids"])
        self.images = Rows(group["images"], budget)

    def rows(self, split: str) -> np.ndarray:
        """Store rows of one split, in store order (skipped images excluded)."""
        return np.flatnonzero(self.split == SPLITS.index(split))

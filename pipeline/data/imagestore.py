"""The image store: one Zarr group per data set, every image decoded once, converted
to RGB, resized (shorter side, then centre crop) to a square and kept as uint8 pixels
([data] image_format = raw) or as one JPEG each (jpeg):

    images  uint8 (N, S, S, 3)   raw: `chunk_rows` images per chunk (default 1), many per shard
            bytes (N,)           jpeg: that square image as a JPEG, chunked alike; attrs
                                 image_format, jpeg_quality, size
    labels  int32 (N,)
    split   uint8 (N,)           index into SPLITS; SKIPPED for an unreadable image
    ids     str   (N,)
    attrs   classes, size, source spec and fingerprint, skipped files

Every chunk carries a crc32c checksum (cache/storage/integrity.py).

Decoding runs in parallel on dask, one shard per task, resumable after a kill. Readers
(`store_images`: the student loader, evaluation, the teacher pass) get uint8 (B, S, S, 3)
rows either way: JPEG rows are decoded on read, by one function (`decode_jpeg`), or by
nvJPEG where they go to a CUDA device (`pixels`).
"""
from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Sequence
from functools import cached_property, partial
from pathlib import Path

import numpy as np
import simplejpeg
import torch
import zarr
from PIL import Image, ImageOps
from zarr.core.dtype import VariableLengthBytes
from zarr.errors import UnstableSpecificationWarning

from cache.storage import blocks
from cache.storage.integrity import CHECKSUMMED, bad_row, check_written, read_all
from cache.storage.rows import DEFAULT_BUDGET, RowReader, Rows, Span
from pipeline.data.source import SPLITS, BadImage, Items, Source
from pipeline.runtime.device import to_device

STORE_VERSION = 2  # 2: crc32c on every chunk
SKIPPED = 255
IDS_CHUNK = 65536  # ids a chunk of the store's `ids` array (about 3 MB)
IMAGE_FORMATS = ("raw", "jpeg")
NAMED = 20  # undecodable images an error names; the rest it counts
log = logging.getLogger(__name__)


def square(image: Image.Image, size: int) -> np.ndarray:
    """Shorter side to `size`, centre crop to a square, as (size, size, 3) uint8."""
    return np.asarray(ImageOps.fit(image.convert("RGB"), (size, size), Image.Resampling.BICUBIC))


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """A square uint8 image as a JPEG. Chroma at full resolution (4:4:4): at 64 to 256 px,
    4:2:0 saved 17 to 20% of the bytes but raised the mean error by 20 to 30% on Stanford 40."""
    return simplejpeg.encode_jpeg(image, quality=quality, colorspace="RGB", colorsubsampling="444")


def decode_jpeg(data: bytes, out: np.ndarray) -> None:
    """Decode one stored JPEG into `out` (S, S, 3); ValueError if it is not such an image.
    simplejpeg (libjpeg-turbo) decodes the pixels Pillow does, 1.7 to 2.5 times as fast."""
    decoded = simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)
    if decoded.shape != out.shape:
        raise ValueError(f"a {decoded.shape} image, not {out.shape}")


def _write_shard(source: Source, path: str, size: int, skip_bad: bool, jpeg_quality: int | None,
                 block: tuple, items: Items) -> None:
    """One shard's work, the block's own `items`; dask gets it as a partial, picklable for
    process and cluster workers. Its marker records the images that do not decode, whatever
    on_bad_image says: with `fail` the build stops once every shard is done, naming them all."""
    _, start, stop = block
    out = np.zeros((stop - start, size, size, 3), dtype=np.uint8)
    skipped = []
    for i, item in enumerate(items):
        try:
            out[i] = square(source.load(item), size)
        except BadImage as err:
            log.warning("skipping %s" if skip_bad else "%s (on_bad_image = fail: the build stops after every shard)",
                        err)
            skipped.append({"row": start + i, "id": item.id, "error": str(err)})
    if jpeg_quality is not None:  # a skipped image's row stays black, as in a raw store
        out = np.array([encode_jpeg(image, jpeg_quality) for image in out], dtype=object)
    zarr.open_array(f"{path}/images", mode="r+")[start:stop] = out
    blocks.mark_done(path, block, skipped)


def write_image_store(source: Source, items: Items, path: str | Path, size: int,
                      attrs: dict, on_bad_image: str = "fail", scheduler: str = "threads",
                      workers: int = 1, shard_rows: int = 256, progress=None,
                      jpeg_quality: int | None = None, chunk_rows: int = 1, order: np.ndarray | None = None) -> dict:
    """Write (or resume) the store at `path` of `items`, its rows `order` (a permutation of
    the items' rows; None: as given); return its manifest. `on_bad_image` is
    "fail" (stop once every shard is done, naming each image that does not decode) or "skip"
    (record the files and leave their rows out). With `jpeg_quality` every image is kept as a
    JPEG of that quality, else as raw pixels. `chunk_rows` images make a chunk (it divides
    `shard_rows`): one suits random reads, many suit reads of whole shards, which decode one
    chunk at a time. A store resumed keeps the shards and chunks it was started with."""
    if on_bad_image not in ("fail", "skip"):
        raise ValueError(f"on_bad_image = {on_bad_image!r}: use 'fail' or 'skip'")
    path, n = str(path), len(items)
    order = np.arange(n) if order is None else order
    shard_rows = blocks.resumed_shard_rows(path, shard_rows)
    group = zarr.open_group(path, mode="a")
    if "images" not in group:
        _create_images(group, n, size, shard_rows, jpeg_quality, chunk_rows)
    elif (started := group["images"].chunks[0]) != chunk_rows:
        log.warning("%s: resuming with the %d-row chunks it was started with, not chunk_rows = %d "
                    "(to build it with %d-row chunks, delete it and rerun)", path, started, chunk_rows, chunk_rows)
    work = blocks.shard_blocks(n, shard_rows, "images")
    todo = blocks.pending(path, work)
    log.info("image store %s: %d of %d shards to write", path, len(todo), len(work))
    # Each shard's task carries its own items only: all of them, sent with every shard's task,
    # cost more than its images' decoding at 200,000 images (dask's processes scheduler).
    write = partial(_write_shard, source, path, size, on_bad_image == "skip", jpeg_quality)
    blocks.run_blocks(write, todo, scheduler, workers, progress, inputs=lambda block: items[order[block[1]:block[2]]])

    skipped = [s for info in blocks.block_infos(path, work) for s in info]
    if skipped and on_bad_image == "fail":
        raise BadImage(_undecodable(skipped, n))
    split = write_rows(group, items, order, [s["row"] for s in skipped])
    manifest = {**attrs, "version": STORE_VERSION, "classes": list(source.classes), "size": size,
                "count": n, "skipped": skipped, "image_format": "raw" if jpeg_quality is None else "jpeg",
                "jpeg_quality": jpeg_quality,
                "split_counts": {s: int((split == i).sum()) for i, s in enumerate(SPLITS)}}
    group.attrs.update(manifest)
    blocks.finish(path, manifest, work)
    return manifest


def write_rows(group: zarr.Group, items: Items, order: np.ndarray, skipped: list[int]) -> np.ndarray:
    """A store's per-row arrays, its rows `items` in `order`: labels, split (SKIPPED at the
    rows `skipped`) and ids; returns the split. The ids are gathered and written a chunk of
    IDS_CHUNK at a time: zarr's chunks of its own choosing (a third of a million ids at
    ImageNet's size) cost 100 MB each to encode, and a million ids gathered at once are a
    second copy of them."""
    split = items.splits[order]
    split[skipped] = SKIPPED
    for name, data in (("labels", items.labels[order]), ("split", split)):
        group.create_array(name, data=data, overwrite=True, **CHECKSUMMED)
    step = min(IDS_CHUNK, max(1, len(order)))
    ids = group.create_array("ids", shape=(len(order),), dtype=items.ids.dtype, chunks=(step,), overwrite=True,
                             **CHECKSUMMED)
    for start in range(0, len(order), step):
        ids[start:start + step] = items.ids[order[start:start + step]]
    return split


def _undecodable(bad: list[dict], n: int) -> str:
    named = "".join(f"\n  {b['error']}" for b in bad[:NAMED])
    more = f"\n  and {len(bad) - NAMED} more" if len(bad) > NAMED else ""
    return (f"{len(bad)} of {n} images cannot be decoded:{named}{more}\n"
            "Fix: repair or remove them, or set `[data] on_bad_image = skip` to leave them out of the store "
            "(its manifest lists them under `skipped`)")


def _create_images(group: zarr.Group, n: int, size: int, shard_rows: int, jpeg_quality: int | None,
                   chunk_rows: int) -> None:
    if shard_rows % chunk_rows:
        raise ValueError(f"chunk_rows = {chunk_rows} must divide shard_rows = {shard_rows}")
    if jpeg_quality is None:
        group.create_array("images", shape=(n, size, size, 3), dtype="uint8",
                           chunks=(chunk_rows, size, size, 3), shards=(shard_rows, size, size, 3), **CHECKSUMMED)
        return
    with warnings.catch_warnings():  # zarr-python's own variable-length bytes, not yet in the Zarr v3 spec
        warnings.simplefilter("ignore", UnstableSpecificationWarning)
        group.create_array("images", shape=(n,), dtype=VariableLengthBytes(), chunks=(chunk_rows,),
                           shards=(shard_rows,),
                           attributes={"image_format": "jpeg", "jpeg_quality": jpeg_quality, "size": size},
                           **CHECKSUMMED)


class JpegRows:
    """The images of a jpeg store, read like cache.storage.rows.Rows (a RowReader): rows by
    integer index as uint8 (B, S, S, 3), decoded on read. The encoded bytes are held in
    memory when they fit the budget: the point of the format is a store far larger than
    memory, so decoded pixels are never kept."""

    def __init__(self, array: zarr.Array, budget: int = DEFAULT_BUDGET):
        size = array.attrs["size"]
        self.array, self.encoded = array, Rows(array, budget)
        self.shape, self.dtype = (array.shape[0], size, size, 3), np.dtype(np.uint8)
        self.shard_rows = self.encoded.shard_rows

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        return self.take(index)

    def take(self, index: np.ndarray) -> np.ndarray:
        """Rows `index` (any order, repeats allowed), decoded on the CPU."""
        index = np.asarray(index)
        out = np.empty((len(index), *self.shape[1:]), dtype=self.dtype)
        for i, (row, data) in enumerate(zip(index.tolist(), self.encoded.take(index))):
            try:
                decode_jpeg(data, out[i])
            except ValueError as err:  # passed its checksum, so it was stored this way
                bad_row(self.array, row, f"not a decodable {self.shape[1]}x{self.shape[2]} JPEG ({err})", err)
        return out

    def held(self, spans: Sequence[Span]) -> JpegRows:
        """As Rows.held: the encoded bytes of `spans` in memory, decoded on read (by whoever
        reads: the loader's read processes, where it has them)."""
        held = copy.copy(self)
        held.encoded = self.encoded.held(spans)
        return held

    def decode_on(self, index: np.ndarray, device: torch.device) -> torch.Tensor:
        """Rows `index` as uint8 (B, S, S, 3) decoded on CUDA `device` by nvJPEG, in one batch.
        Its pixels differ from the CPU decoder's by a few levels."""
        from torchvision.io import decode_jpeg as nvjpeg  # its CPU decoder is slower than simplejpeg's
        encoded = self.encoded.take(np.asarray(index))
        try:
            images = nvjpeg([torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in encoded], device=device)
        except RuntimeError:
            self.take(index)  # names the row that does not decode
            raise
        return torch.stack(images).permute(0, 2, 3, 1)


Images = RowReader  # a store's images as readers get them: Rows, JpegRows, or what their `held` gives


def store_images(array: zarr.Array, budget: int = DEFAULT_BUDGET) -> Images:
    """A store's `images` array for reading, raw or JPEG: rows as uint8 (B, S, S, 3)."""
    return JpegRows(array, budget) if array.attrs.get("image_format") == "jpeg" else Rows(array, budget)


def pixels(images: Images, index: np.ndarray, device: torch.device) -> torch.Tensor:
    """Rows `index` of `store_images` as a uint8 (B, S, S, 3) tensor on `device`; JPEG rows
    bound for a CUDA device are decoded there."""
    if device.type == "cuda" and isinstance(images, JpegRows) and len(index):
        return images.decode_on(index, device)
    return to_device(torch.as_tensor(images.take(index)), device)


class ImageStore:
    """A finished image store, read for training and evaluation: its images held in memory
    where they fit `budget` bytes, else read from disk."""

    def __init__(self, path: str | Path, budget: int = DEFAULT_BUDGET):
        manifest = blocks.read_manifest(path)
        if manifest is None:
            raise FileNotFoundError(f"{path} is not a finished image store (no manifest.json); "
                                    "run PrepareDataset for this data set")
        check_written(path)
        group = zarr.open_group(str(path), mode="r")
        self.path, self.manifest, self.budget = Path(path), manifest, budget
        self.classes: list[str] = manifest["classes"]
        self.size: int = manifest["size"]
        self.labels = read_all(group["labels"]).astype(np.int64)
        self.split = read_all(group["split"])
        self.images = store_images(group["images"], budget)

    @cached_property
    def ids(self) -> np.ndarray:
        """Each row's image id, read when first asked for: training and the teacher pass never
        ask, and at a million images the ids take more memory than the labels and splits."""
        return read_all(zarr.open_group(str(self.path), mode="r")["ids"])

    def rows(self, split: str) -> np.ndarray:
        """Store rows of one split, in store order (skipped images excluded)."""
        return np.flatnonzero(self.split == SPLITS.index(split))

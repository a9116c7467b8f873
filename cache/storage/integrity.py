"""Damaged data at rest: detect it, name it, and make a rerun rebuild it.

Every chunk of the image store and the teacher cache carries a crc32c checksum
(`CHECKSUMMED`), and zarr's sharding keeps one on every shard index, so a flipped bit
or a truncated shard file fails the read instead of returning wrong numbers. zarr's
own error names no file, and a missing or empty shard file reads as fill values, so
every read of a finished output goes through `checked`: it refuses missing and empty
shard files, and turns a failed read into `DamagedData`, which names the array, each
damaged shard file and the fix. Damage also marks the output unfinished (its
manifest.json is removed and the damaged shard files deleted), so the task that made
it rebuilds it when rerun instead of reusing it. Rows a finished output's manifest does
not record as written (cache/storage/blocks.py) are damage too (`unwritten`): they hold
fill values, which no checksum can tell from data.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from cache.storage.blocks import MANIFEST, WRITTEN, gaps, nodes, read_manifest

# create_array keywords for every array of the store and the cache: zarr's default zstd,
# then crc32c over the stored bytes; empty chunks are written too, so that a missing shard
# file is damage, never a run of fill values.
CHECKSUMMED = {"compressors": (ZstdCodec(level=0, checksum=False), Crc32cCodec()),
               "config": {"write_empty_chunks": True}}


@dataclass(frozen=True)
class Damage:
    array: str   # path of the array in its group, e.g. eval/logits
    file: Path   # the shard file (the chunk file of an unsharded array)
    error: str

    def __str__(self) -> str:
        return f"array {self.array}, shard file {self.file}: {self.error}"


class DamagedData(OSError):
    """Stored data failed its checksum, or a shard file is missing or empty."""

    def __init__(self, damage: list[Damage], fix: str):
        self.damage, self.fix = damage, fix
        super().__init__("damaged data:\n  " + "\n  ".join(map(str, damage)) + "\n" + fix)

    def __reduce__(self):  # raised in dask's worker processes, re-raised in the caller
        return type(self), (self.damage, self.fix)


RERUN = ("Fix: rerun your command (e.g. `luigi --module tasks RunAll`): the task that wrote "
         "a damaged output rebuilds it instead of reusing it.")


def invalidate(root: Path | None, damage: list[Damage]) -> str:
    """Mark the output at `root` unfinished (its manifest first) and delete its damaged
    shard files, so that a rerun rewrites every shard; say what was done."""
    if root is None:
        return ""
    try:
        (root / MANIFEST).unlink(missing_ok=True)
        for d in damage:
            if d.file.is_file():  # not the group folder named for unreadable metadata
                d.file.unlink()
    except OSError as err:
        return f"Could not mark {root} unfinished ({err}): delete {root / MANIFEST} by hand.\n"
    return f"{root} is now unfinished ({MANIFEST} and the damaged shard files removed).\n"


def shards(array: zarr.Array, rows: slice = slice(None)) -> Iterator[tuple[tuple[slice, ...], Path]]:
    """(region, file) of every shard of `array` holding any of `rows` (along axis 0)."""
    outer = array.shards or array.chunks
    start, stop, _ = rows.indices(array.shape[0])
    grid = [range(start // outer[0], math.ceil(stop / outer[0])),
            *(range(math.ceil(s / o)) for s, o in zip(array.shape[1:], outer[1:]))]
    folder = _folder(array)
    for coords in itertools.product(*grid):
        region = tuple(slice(c * o, min((c + 1) * o, s)) for c, o, s in zip(coords, outer, array.shape))
        yield region, folder / array.metadata.encode_chunk_key(coords)


def _file_error(file: Path) -> str | None:
    if not file.is_file():
        return "missing"
    if file.stat().st_size == 0:
        return "empty (0 bytes)"
    return None


def damaged(array: zarr.Array, rows: slice = slice(None)) -> list[Damage]:
    """Read every shard of `array` holding `rows` on its own; return the damaged ones."""
    found = []
    for region, file in shards(array, rows):
        error = _file_error(file)
        if error is None:
            try:
                array[region]
            except Exception as err:  # noqa: BLE001 (whatever the codec raises: the checksum, zstd, a short index)
                error = f"{type(err).__name__}: {err}"
        if error:
            found.append(Damage(_name(array), file, error))
    return found


@contextmanager
def checked(array: zarr.Array, rows: slice = slice(None)) -> Iterator[None]:
    """Reads of `rows` of `array` inside the block return stored data or raise DamagedData."""
    missing = [Damage(_name(array), file, error) for _, file in shards(array, rows)
               if (error := _file_error(file))]
    if missing:
        _fail(array, missing)
    try:
        yield
    except DamagedData:
        raise
    except Exception as err:
        damage = damaged(array, rows)
        if not damage:  # not the data: e.g. a transient I/O error, or a bug
            raise
        _fail(array, damage, err)


def _fail(array: zarr.Array, damage: list[Damage], cause: Exception | None = None) -> NoReturn:
    raise DamagedData(damage, invalidate(output_root(array), damage) + RERUN) from cause


def bad_row(array: zarr.Array, row: int, error: str, cause: Exception) -> NoReturn:
    """Raise DamagedData for a row of `array` whose bytes pass their checksum but are no
    valid element (a stored JPEG that does not decode): they were written wrong."""
    _, file = next(shards(array, slice(row, row + 1)))
    _fail(array, [Damage(_name(array), file, f"row {row}: {error}")], cause)


def unwritten(root: Path) -> list[Damage]:
    """Each shard of the finished output at `root` holding rows of a block-written (sharded)
    array that its manifest does not record as written."""
    record = read_manifest(root).get(WRITTEN)
    if record is None:
        # Finished before manifests kept the record: taken as written, as every row was unless a
        # build was resumed with another shard_rows by several workers (docs/design.md).
        return []
    found = []
    for path, array in nodes(zarr.open_group(str(root), mode="r")):
        ranges = record.get(path.split("/")[0])
        if ranges is None or not isinstance(array, zarr.Array) or not array.shards:
            continue
        for lo, hi in gaps(ranges, array.shape[0]):
            for region, file in shards(array, slice(lo, hi)):
                first, last = max(lo, region[0].start), min(hi, region[0].stop) - 1
                found.append(Damage(path, file, f"rows {first} to {last} were never written "
                                                 f"({MANIFEST} does not record them)"))
    return found


def check_written(root: str | Path) -> None:
    """Raise DamagedData naming the rows of the finished output at `root` that were never
    written, once it is marked unfinished (`invalidate`)."""
    damage = unwritten(Path(root))
    if damage:
        raise DamagedData(damage, invalidate(Path(root), damage) + RERUN)


def read_all(array: zarr.Array):
    """The whole array in memory, checked."""
    with checked(array):
        return array[...]


def verify(root: str | Path) -> list[Damage]:
    """Every damaged shard of every array of the finished Zarr group at `root`, and every
    shard holding rows never written."""
    root = Path(root)
    try:
        arrays = [node for _, node in nodes(zarr.open_group(str(root), mode="r")) if isinstance(node, zarr.Array)]
    except Exception as err:  # noqa: BLE001 (unreadable metadata, zarr.json, is damage too)
        return [Damage("(metadata)", root, f"{type(err).__name__}: {err}")]
    return unwritten(root) + [d for array in arrays for d in damaged(array)]


def verify_outputs(folder: str | Path) -> list[Path]:
    """Verify every finished Zarr output under `folder` (a data set's work folder) and return
    them. Damage anywhere raises DamagedData listing every damaged shard, once each damaged
    output is marked unfinished."""
    roots = sorted(p.parent for p in Path(folder).glob(f"*/*.zarr/{MANIFEST}"))
    if not roots:
        raise FileNotFoundError(f"no finished image store or teacher cache under {folder}")
    damage = {root: verify(root) for root in roots}
    if any(damage.values()):
        done = "".join(invalidate(root, found) for root, found in damage.items() if found)
        raise DamagedData([d for found in damage.values() for d in found], done + RERUN)
    return roots


def output_root(array: zarr.Array) -> Path | None:
    """The finished output (the folder with a manifest) that holds `array`."""
    folder = _folder(array)
    groups = itertools.takewhile(lambda p: (p / "zarr.json").is_file(), (folder, *folder.parents))
    return next((p for p in groups if (p / MANIFEST).is_file()), None)


def _name(array: zarr.Array) -> str:
    root, folder = output_root(array), _folder(array)
    return str(folder.relative_to(root)) if root else str(folder)


def _folder(array: zarr.Array) -> Path:
    return (Path(array.store.root) / array.path).absolute()

"""Damage done to an output at rest, as a disk or a careless hand would: a byte flipped
inside a chunk, a shard file truncated, emptied or deleted."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr


def shard_file(output: Path, array: str, shard: int) -> Path:
    a = zarr.open_array(str(output / array), mode="r")
    return output / array / a.metadata.encode_chunk_key((shard,) + (0,) * (a.ndim - 1))


def flip_inside_chunk(file: Path, array: zarr.Array) -> None:
    """Flip a byte in the middle of the shard's first chunk, located by the shard index
    (at the end of the file: an (offset, length) uint64 pair per chunk, then a crc32c)."""
    raw = bytearray(file.read_bytes())
    chunks = array.shards[0] // array.chunks[0]
    index = np.frombuffer(bytes(raw[-(16 * chunks + 4):-4]), "<u8").reshape(chunks, 2)
    offset, length = map(int, index[0])
    raw[offset + length // 2] ^= 0x10
    file.write_bytes(raw)


def damage(output: Path, array: str, shard: int, how: str) -> Path:
    file = shard_file(output, array, shard)
    if how == "flip":
        flip_inside_chunk(file, zarr.open_array(str(output / array), mode="r"))
    elif how == "delete":  # `rm` of a shard file
        file.unlink()
    else:
        file.write_bytes(file.read_bytes()[: {"truncate": file.stat().st_size // 2, "empty": 0}[how]])
    return file

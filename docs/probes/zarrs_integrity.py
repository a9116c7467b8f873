"""Does the zarrs codec pipeline detect a flipped byte in a checksummed chunk? (docs/results.md)

Run: `pip install zarrs==0.2.3 && python docs/probes/zarrs_integrity.py`. Prints, for
zarr-python and zarrs (validate_checksums on), what each kind of read of a damaged shard
does: raise, or return the damaged row without error.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zarr

from cache.storage.integrity import CHECKSUMMED

ROWS, SHARD = 40, 16  # the array ends inside its last shard, as a store's usually does
PIPELINES = {"zarr": {}, "zarrs": {"codec_pipeline.path": "zarrs.ZarrsCodecPipeline",
                                   "codec_pipeline.validate_checksums": True}}


def damaged_array(root: Path, row: int) -> np.ndarray:
    """An array of our layout (one row a chunk, shards, crc32c) with a byte flipped in `row`'s
    chunk, located by the shard index; returns what was stored."""
    data = np.arange(ROWS * 8, dtype="uint8").reshape(ROWS, 8)
    a = zarr.create_array(str(root), shape=data.shape, dtype="uint8", chunks=(1, 8), shards=(SHARD, 8),
                          fill_value=0, overwrite=True, **CHECKSUMMED)
    a[...] = data
    shard, chunk = divmod(row, SHARD)
    file = root / "c" / str(shard) / "0"
    raw = bytearray(file.read_bytes())
    index = np.frombuffer(bytes(raw[-(16 * SHARD + 4):-4]), "<u8").reshape(SHARD, 2)
    offset, length = map(int, index[chunk])
    raw[offset + length // 2] ^= 0x10
    file.write_bytes(raw)
    return data


def main() -> None:
    # (what, damaged row, read returning rows starting at the damaged one)
    reads: list[tuple[str, int, Callable[[zarr.Array], np.ndarray]]] = [
        ("a[16:32], a whole shard", 18, lambda a: a[16:32][2:]),
        ("a[16:24], part of a shard", 18, lambda a: a[16:24][2:]),
        ("a[18], one row", 18, lambda a: a[18:19]),
        ("a.oindex[[17, 18]], one shard", 18, lambda a: a.oindex[np.array([17, 18])][1:]),
        ("a[32:40], the whole last shard", 34, lambda a: a[32:40][2:]),
        ("a[:], the whole array", 34, lambda a: a[:][34:]),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "a.zarr"
        for pipeline, config in PIPELINES.items():
            for what, row, read in reads:
                stored = damaged_array(root, row)
                with zarr.config.set(config):
                    array = zarr.open_array(str(root), mode="r")
                    try:
                        got = read(array)[0]
                        said = "no error, " + ("row intact" if np.array_equal(got, stored[row]) else
                                               f"row {row} read as {got.tolist()}, stored {stored[row].tolist()}")
                    except Exception as err:  # noqa: BLE001 (whatever the pipeline raises is the answer)
                        said = f"{type(err).__name__}: {str(err)[:40]}"
                print(f"{pipeline:5} {what:32} {said}")


if __name__ == "__main__":
    main()

"""The finished teacher cache as one HDF5 file, for tools that read HDF5 but not Zarr.

Every array keeps its path (eval/logits, aug/params, ...), shape and dtype (float16 stays
float16). Attributes HDF5 cannot hold natively (dicts, lists, None) are stored as JSON
strings, their names listed in the JSON_ATTRS attribute, so `read_attrs` gives back
exactly what the Zarr group had.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import zarr

from cache.storage.blocks import nodes, read_manifest
from cache.storage.files import atomic_path
from cache.storage.integrity import checked

JSON_ATTRS = "json_attrs"
_NATIVE = (str, int, float)  # bool is an int
# gzip rather than lzf: every HDF5 reader (C, MATLAB, R) has it; shuffle helps it on floats.
_COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}


def export_hdf5(cache_path: str | Path, out_path: str | Path) -> Path:
    """Copy every array and attribute of the finished cache at `cache_path` into the HDF5
    file `out_path`. The file is built under a hidden temporary name in the same folder and
    renamed when complete, so an interrupted export never leaves a plausible `out_path`."""
    if read_manifest(cache_path) is None:
        raise FileNotFoundError(f"{cache_path} is not a finished teacher cache (no manifest.json)")
    group = zarr.open_group(str(cache_path), mode="r")
    out = Path(out_path)
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        _write_attrs(f, group.attrs.asdict())
        for name, node in nodes(group):
            if isinstance(node, zarr.Group):
                _write_attrs(f.require_group(name), node.attrs.asdict())
            else:
                _copy_array(node, f, name)
    return out


def read_attrs(node: h5py.Group | h5py.Dataset) -> dict:
    """The attributes of an exported group or array as they were in Zarr: JSON ones decoded,
    numpy scalars as Python values."""
    attrs = dict(node.attrs)
    encoded = set(json.loads(attrs.pop(JSON_ATTRS, "[]")))
    return {key: json.loads(value) if key in encoded else _python(value) for key, value in attrs.items()}


def _copy_array(array: zarr.Array, f: h5py.File, name: str) -> None:
    # HDF5 chunks follow Zarr's (a run of whole rows, one read); copying a shard at a time
    # keeps memory bounded by one shard whatever the cache's size.
    out = f.create_dataset(name, shape=array.shape, dtype=array.dtype,
                           chunks=(min(array.chunks[0], array.shape[0]), *array.chunks[1:]), **_COMPRESSION)
    step = (array.shards or array.chunks)[0]
    for start in range(0, array.shape[0], step):
        with checked(array, slice(start, start + step)):
            rows = array[start:start + step]
        out[start:start + step] = rows
    _write_attrs(out, array.attrs.asdict())


def _write_attrs(node: h5py.Group | h5py.Dataset, attrs: dict) -> None:
    encoded = sorted(key for key, value in attrs.items() if not isinstance(value, _NATIVE))
    for key, value in attrs.items():
        node.attrs[key] = json.dumps(value) if key in encoded else value
    if encoded:
        node.attrs[JSON_ATTRS] = json.dumps(encoded)


def _python(value):
    return value.item() if isinstance(value, np.generic) else value

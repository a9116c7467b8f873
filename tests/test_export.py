"""HDF5 export of the teacher cache: every array and attribute round-trips, atomically."""
from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import zarr
from support.build import build

import cache.export
import models
from cache.export import export_hdf5, read_attrs
from cache.reader import TeacherCache
from cache.storage.blocks import nodes
from pipeline.data.synthetic import CLASSES
from pipeline.runtime.lock import LOCK
from tasks import ExportCacheHDF5

EVAL = ["eval/logits"]  # feature_dtype auto at [kd] beta = 0: no features
AUG = ["aug/logits", "aug/params", "aug/rows"]
COMPACT = sorted(["aug/params", "aug/rows", *(f"{split}/{name}" for split in ("aug", "eval") for name in (
    "features", "features_scales", "sample_indices", "tail_logsumexp", "topk_indices", "topk_values"))])


@pytest.fixture
def export(luigi_config, tmp_path) -> ExportCacheHDF5:
    """The export task of the tiny experiment, its teacher a random-init checkpoint (no fine-tuning)."""
    torch.manual_seed(0)
    models.save_weights(models.create("convnext_atto", len(CLASSES)), tmp_path / "teacher.safetensors")
    luigi_config("teacher", "checkpoint", str(tmp_path / "teacher.safetensors"))
    return ExportCacheHDF5("demo")


def assert_round_trip(cache_path: Path, h5_path: Path) -> list[str]:
    """Check the HDF5 file against the Zarr cache; return the array names."""
    group = zarr.open_group(str(cache_path), mode="r")
    arrays = {name: node for name, node in nodes(group) if isinstance(node, zarr.Array)}
    with h5py.File(h5_path, "r") as f:
        datasets = []
        f.visititems(lambda name, node: datasets.append(name) if isinstance(node, h5py.Dataset) else None)
        assert sorted(datasets) == sorted(arrays)
        for name, array in arrays.items():
            assert f[name].dtype == array.dtype and f[name].compression == "gzip", name
            np.testing.assert_array_equal(f[name][...], array[...], err_msg=name)
        assert read_attrs(f) == group.attrs.asdict()
        assert read_attrs(f)["identity"] == TeacherCache(cache_path).identity
    return sorted(arrays)


@pytest.mark.slow
def test_export_round_trips_the_cache_with_and_without_views(export, luigi_config, caplog):
    assert build(export)[0]
    h5_path = Path(export.output().path)
    with caplog.at_level(logging.INFO, logger="luigi-interface"):  # build() logs warnings only
        export.work()
    assert str(h5_path.resolve()) in caplog.text  # the log says where the file is
    assert assert_round_trip(export.requires().cache_path(), h5_path) == AUG + EVAL
    with h5py.File(h5_path, "r") as f:
        assert f["eval/logits"].dtype == np.float16 and f["aug/params"].dtype == np.float32
    written = sorted(p.name for p in h5_path.parent.iterdir() if p.name != LOCK)
    assert written == ["cache.h5", "cost.json", "settings.json"]

    luigi_config("teacher", "views", "0")
    export = ExportCacheHDF5("demo")
    ok, ran = build(export)
    assert ok and sorted(type(t).__name__ for t in ran) == ["CacheTeacher", "ExportCacheHDF5"]
    assert assert_round_trip(export.requires().cache_path(), Path(export.output().path)) == EVAL

    luigi_config("teacher", "views", "2")
    luigi_config("teacher", "topk", "3")
    luigi_config("teacher", "tail", "sampled")
    luigi_config("teacher", "feature_dtype", "int8")
    export = ExportCacheHDF5("demo")
    assert build(export)[0]
    assert assert_round_trip(export.requires().cache_path(), Path(export.output().path)) == COMPACT


@pytest.mark.slow
def test_interrupted_export_leaves_no_file(export, tmp_path, monkeypatch):
    assert build(export.requires())[0]

    def crash(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cache.export, "_copy_array", crash)
    with pytest.raises(KeyboardInterrupt):
        export_hdf5(export.requires().cache_path(), tmp_path / "out" / "cache.h5")
    assert list((tmp_path / "out").iterdir()) == []


def test_unfinished_cache_is_refused(tmp_path):
    zarr.open_group(str(tmp_path / "cache.zarr"), mode="w")
    with pytest.raises(FileNotFoundError, match="not a finished teacher cache"):
        export_hdf5(tmp_path / "cache.zarr", tmp_path / "cache.h5")
    assert not (tmp_path / "cache.h5").exists()

"""ExportCacheHDF5: the finished teacher cache as one HDF5 file, for tools outside the pipeline."""
from __future__ import annotations

import logging

import luigi

from cache.export import export_hdf5
from tasks.base import FingerprintedTask
from tasks.teacher import CacheTeacher


class ExportCacheHDF5(FingerprintedTask):
    """Every array and attribute of the teacher cache in a single, compressed cache.h5."""

    kind = "export"

    def requires(self):
        return CacheTeacher(self.dataset)

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(self.folder() / "cache.h5")

    def work(self) -> None:
        self.write_settings()
        path = export_hdf5(self.requires().cache_path(), self.output().path)
        logging.getLogger("luigi-interface").info("%s: the teacher cache as HDF5: %s (%d bytes)", self.task_id,
                                                  path.resolve(), path.stat().st_size)

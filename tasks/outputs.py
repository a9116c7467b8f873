"""Where a data set's finished outputs are, as luigi.cfg places them: for the loader API
(pipeline/api.py), which opens a cache by data set name."""
from __future__ import annotations

from pathlib import Path

from tasks.base import memory_budget
from tasks.config import section
from tasks.data import PrepareDataset
from tasks.teacher import CacheTeacher


def finished_outputs(dataset: str) -> tuple[Path, Path, int]:
    """The image store and teacher cache of `dataset` and [compute]'s memory budget (bytes);
    FileNotFoundError naming the command that makes them if either is not finished."""
    if dataset not in (names := section("datasets")):
        raise ValueError(f"no data set {dataset!r} in luigi.cfg's [datasets] (it has {', '.join(names) or 'none'})")
    task = CacheTeacher(dataset)
    if not task.complete():
        raise FileNotFoundError(f"the teacher cache of {dataset!r} is not finished ({task.cache_path()}): "
                                f"run `luigi --module tasks CacheTeacher --dataset {dataset}`")
    return PrepareDataset(dataset).store_path(), task.cache_path(), memory_budget()

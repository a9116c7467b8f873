"""Resumable, shard-aligned writing of a Zarr group.

A job is a list of blocks, each owning whole shards, so no two writers touch one
shard. A block is recorded as done (a marker file) only after its data is
written; a rerun after a kill redoes just the blocks without a marker. The
manifest, the completion marker that Luigi looks for, is written last.
"""
from __future__ import annotations

import json
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dask
import zarr
from dask.callbacks import Callback
from zarr.errors import ZarrUserWarning

from cache.storage.files import atomic_write_text

MANIFEST = "manifest.json"
MARKERS = ".done"
SECONDS = ".seconds"  # in MARKERS: a Stopwatch's record, valid exactly as long as the markers are

Progress = Callable[..., None]  # progress(blocks done, blocks in all, rows=rows done)


def read_manifest(root: str | Path) -> dict | None:
    path = Path(root) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def nodes(group: zarr.Group) -> list[tuple[str, zarr.Array | zarr.Group]]:
    """Every array and subgroup under `group` by path, a group before its members."""
    with warnings.catch_warnings():  # manifest.json and block markers sit beside the nodes on purpose
        warnings.filterwarnings("ignore", "Object at .* is not recognized", ZarrUserWarning)
        return sorted(group.members(max_depth=None), key=lambda member: member[0])


def block_name(block: Sequence[Any]) -> str:
    return "-".join(str(part) for part in block)


def mark_done(root: str | Path, block: Sequence[Any], info: Any = None) -> None:
    atomic_write_text(Path(root) / MARKERS / block_name(block), json.dumps(info))


def pending(root: str | Path, blocks: list) -> list:
    done = Path(root) / MARKERS
    return [b for b in blocks if not (done / block_name(b)).exists()]


def block_infos(root: str | Path, blocks: list) -> list:
    """What each finished block reported (e.g. skipped images), in block order."""
    done = Path(root) / MARKERS
    return [json.loads((done / block_name(b)).read_text()) for b in blocks]


def finish(root: str | Path, manifest: dict) -> None:
    """Drop the temporary files of shard writes a kill interrupted (zarr's LocalStore writes
    a shard to `<key>.<uuid>.partial`, then renames it: a shard is whole or absent), write
    the manifest, then drop the block markers it makes redundant."""
    for leftover in Path(root).rglob("*.partial"):
        leftover.unlink()
    atomic_write_text(Path(root) / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    shutil.rmtree(Path(root) / MARKERS, ignore_errors=True)


def shard_blocks(n: int, rows_per_shard: int, tag: str = "") -> list[tuple]:
    """(tag, start, stop) row ranges, one per shard; the tag names the arrays a block writes."""
    return [(tag, start, min(start + rows_per_shard, n)) for start in range(0, n, rows_per_shard)]


class Stopwatch:
    """Wall seconds a resumable job at `root` has taken over all its runs: what earlier, stopped
    runs recorded beside its block markers, plus this run's since the stopwatch was made.
    `lap()` records that sum as each block finishes (run_blocks does), so a stop loses the
    seconds since the last finished block, as it loses that block's work. finish() drops the
    record with the markers: a job redone from scratch starts again from 0."""

    def __init__(self, root: str | Path):
        self.path = Path(root) / MARKERS / SECONDS
        self.before = float(self.path.read_text()) if self.path.exists() else 0.0
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.start

    def lap(self) -> None:
        atomic_write_text(self.path, repr(self.seconds()))


class _Ticks(Callback):
    def __init__(self, rows: dict, progress: Progress | None, stopwatch: Stopwatch | None):
        super().__init__()
        self.rows, self.progress, self.stopwatch, self.done, self.rows_done = rows, progress, stopwatch, 0, 0

    def _posttask(self, key, result, dsk, state, worker_id):
        if key in self.rows:
            self.tick(self.rows[key])

    def tick(self, rows: int) -> None:
        self.done, self.rows_done = self.done + 1, self.rows_done + rows
        if self.stopwatch:
            self.stopwatch.lap()
        if self.progress:
            self.progress(self.done, len(self.rows), rows=self.rows_done)


def _call(fn: Callable[[tuple], Any], block: tuple) -> Any:
    return fn(block)


def run_blocks(fn: Callable[[tuple], Any], blocks: list, scheduler: str = "threads",
               workers: int = 1, progress: Progress | None = None, stopwatch: Stopwatch | None = None) -> None:
    """Run fn(block) for every (tag, start, stop) block on dask: a local scheduler
    ("threads", "processes", "synchronous") or a dask cluster given by its address
    ("tcp://host:8786"). `progress` hears (0, n, rows=0) first, then each finished block;
    `stopwatch` laps at each finished block."""
    # Keys unique to this call: a dask cluster merges tasks of equal keys, so two runs on one
    # cluster at once (two data sets' stores, say) would otherwise share their blocks.
    run = uuid.uuid4().hex[:8]
    # fn enters the graph once, as data every block reads: it may hold a data set's whole item
    # list, which a cluster would otherwise receive once per block.
    shared = dask.delayed(fn, name=f"fn-{run}", traverse=False)
    tasks = [dask.delayed(_call, pure=False)(shared, block, dask_key_name=f"block-{block_name(block)}-{run}")
             for block in blocks]
    ticks = _Ticks({t.key: stop - start for t, (_, start, stop) in zip(tasks, blocks)}, progress, stopwatch)
    if progress and tasks:
        progress(0, len(tasks), rows=0)
    if "://" in scheduler:
        from distributed import Client, as_completed
        with Client(scheduler) as client:
            for future in as_completed(client.compute(tasks)):
                future.result()
                ticks.tick(ticks.rows[future.key])
        return
    with ticks:
        dask.compute(*tasks, scheduler=scheduler, num_workers=workers)

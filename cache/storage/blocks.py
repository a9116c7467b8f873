"""Resumable, shard-aligned writing of a Zarr group.

A job is a list of blocks, each owning whole shards, so no two writers touch one
shard: a job resumed with another shard size keeps the shards its arrays have
(`resumed_shard_rows`). A block is recorded as done (a marker file) only after its
data is written; a rerun after a kill redoes just the blocks without a marker. The
manifest, the completion marker that Luigi looks for, is written last, once every
block is done, with the rows they wrote (`WRITTEN`), which readers check
(cache/storage/integrity.py).
"""
from __future__ import annotations

import json
import logging
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
WRITTEN = "written"  # in the manifest: row ranges [start, stop) the blocks wrote, by tag
MARKERS = ".done"
SECONDS = ".seconds"  # in MARKERS: a Stopwatch's record, valid exactly as long as the markers are

Progress = Callable[..., None]  # progress(blocks done, blocks in all, rows=rows done)
log = logging.getLogger(__name__)


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


def finish(root: str | Path, manifest: dict, work: Sequence[tuple] = ()) -> None:
    """Drop the temporary files of shard writes a kill interrupted (zarr's LocalStore writes
    a shard to `<key>.<uuid>.partial`, then renames it: a shard is whole or absent), write
    the manifest with the rows the blocks of `work` wrote, then drop the block markers it
    makes redundant. RuntimeError, naming the rows, while a block of `work` has no marker."""
    unmarked = pending(root, list(work))
    if unmarked:
        rows = ", ".join(f"rows {start} to {stop - 1} of {tag}" for tag, start, stop in unmarked)
        raise RuntimeError(f"{root} is not finished: {rows} were never written; rerun to write them")
    for leftover in Path(root).rglob("*.partial"):
        leftover.unlink()
    manifest = {**manifest, WRITTEN: spans(work)}
    atomic_write_text(Path(root) / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    shutil.rmtree(Path(root) / MARKERS, ignore_errors=True)


def spans(work: Sequence[tuple]) -> dict[str, list[list[int]]]:
    """The rows of (tag, start, stop) blocks by tag, as sorted [start, stop) ranges, touching ones merged."""
    out: dict[str, list[list[int]]] = {}
    for tag, start, stop in sorted(work):
        ranges = out.setdefault(tag, [])
        if ranges and ranges[-1][1] >= start:
            ranges[-1][1] = max(ranges[-1][1], stop)
        else:
            ranges.append([start, stop])
    return out


def gaps(ranges: Sequence[Sequence[int]], n: int) -> list[tuple[int, int]]:
    """The rows of 0..n-1 outside `ranges` ([start, stop) each), as [start, stop) ranges."""
    out, at = [], 0
    for start, stop in sorted(map(tuple, ranges)):
        out.append((at, min(start, n)))
        at = max(at, stop)
    out.append((at, n))
    return [(lo, hi) for lo, hi in out if lo < hi]


def shard_blocks(n: int, rows_per_shard: int, tag: str = "") -> list[tuple]:
    """(tag, start, stop) row ranges, one per shard; the tag names the arrays a block writes: the
    array of that path, or every array under the group of that path."""
    return [(tag, start, min(start + rows_per_shard, n)) for start in range(0, n, rows_per_shard)]


def resumed_shard_rows(root: str | Path, shard_rows: int) -> int:
    """The rows per shard to cut a job's blocks by: `shard_rows` for a new job; for one resumed,
    those its sharded arrays already have, whatever `shard_rows` is now (logged): blocks cut
    otherwise would share shards, and two writers of one shard lose each other's rows."""
    if not (Path(root) / "zarr.json").is_file():
        return shard_rows
    kept = {node.shards[0] for _, node in nodes(zarr.open_group(str(root), mode="r"))
            if isinstance(node, zarr.Array) and node.shards}
    if len(kept) > 1:
        raise ValueError(f"{root} holds arrays of {sorted(kept)}-row shards: delete it and rerun")
    if not kept or kept == {shard_rows}:
        return shard_rows
    (started,) = kept
    log.warning("%s: resuming with the %d-row shards it was started with, not shard_rows = %d "
                "(to build it with %d-row shards, delete it and rerun)", root, started, shard_rows, shard_rows)
    return started


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


def _call(fn: Callable[..., Any], block: tuple, *inputs: Any) -> Any:
    return fn(block, *inputs)


def run_blocks(fn: Callable[..., Any], blocks: list, scheduler: str = "threads",
               workers: int = 1, progress: Progress | None = None, stopwatch: Stopwatch | None = None,
               inputs: Callable[[tuple], Any] | None = None) -> None:
    """Run fn(block) for every (tag, start, stop) block on dask: a local scheduler
    ("threads", "processes", "synchronous") or a dask cluster given by its address
    ("tcp://host:8786"). With `inputs`, fn(block, inputs(block)): what only that block reads
    (its rows' items) travels with its task alone. `progress` hears (0, n, rows=0) first, then
    each finished block; `stopwatch` laps at each finished block."""
    # Keys unique to this call: a dask cluster merges tasks of equal keys, so two runs on one
    # cluster at once (two data sets' stores, say) would otherwise share their blocks.
    run = uuid.uuid4().hex[:8]
    # fn enters the graph once, as data every block reads; a cluster receives it once. The local
    # processes scheduler sends it with every block, so a block's own data belongs in `inputs`.
    shared = dask.delayed(fn, name=f"fn-{run}", traverse=False)
    tasks = [dask.delayed(_call, pure=False, traverse=False)(
                 shared, block, *([inputs(block)] if inputs else []), dask_key_name=f"block-{block_name(block)}-{run}")
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

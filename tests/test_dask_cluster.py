"""A real dask cluster (two worker processes on 127.0.0.1) builds the image store and the
teacher cache byte for byte as the threads scheduler does, survives a worker killed
during the teacher pass, reports block errors and progress, and keeps two runs apart."""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest
from distributed import Client, LocalCluster
from support.build import build
from support.slow_runs import DyingTeacherJob, assert_same_files, save_teacher, teacher_job, write_cache, write_store

from cache.storage import blocks
from pipeline.data.source import BadImage
from pipeline.teacher import teacher_pass
from tasks import CacheTeacher, PrepareDataset


@pytest.fixture(scope="module")
def client():
    """A client of a two-process LocalCluster; every process stops with the module."""
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


@pytest.fixture
def cluster(client) -> Client:
    client.wait_for_workers(2, timeout=60)  # a worker killed by an earlier test is back
    return client


@pytest.mark.slow
def test_workers_import_this_checkout(cluster):
    here = teacher_pass.__file__
    assert set(cluster.run(lambda: teacher_pass.__file__).values()) == {here}


@pytest.mark.slow
def test_cluster_builds_the_store_and_cache_of_the_threads_scheduler(cluster, luigi_config, tmp_path):
    """PrepareDataset and CacheTeacher with [compute] scheduler = tcp://..., against the same
    tasks with the threads scheduler: every file of the store and the cache is equal."""
    save_teacher(tmp_path / "teacher.safetensors")
    luigi_config("datasets", "demo", "synthetic seed=0 train_per_class=4 test_per_class=2 size=24")
    luigi_config("data", "store_size", "20")
    luigi_config("compute", "shard_rows", "8")
    luigi_config("data", "chunk_rows", "8")  # a divisor of shard_rows
    luigi_config("compute", "workers", "2")
    luigi_config("teacher", "checkpoint", str(tmp_path / "teacher.safetensors"))
    folders = {}
    for scheduler in ("threads", cluster.scheduler.address):
        luigi_config("paths", "work", str(tmp_path / scheduler.replace("/", "_")))
        luigi_config("compute", "scheduler", scheduler)
        ok, ran = build(CacheTeacher("demo"))
        assert ok and {type(t).__name__ for t in ran} == {"PrepareDataset", "CacheTeacher"}
        folders[scheduler] = (PrepareDataset("demo").store_path(), CacheTeacher("demo").cache_path())
    (threads_store, threads_cache), (cluster_store, cluster_cache) = folders.values()
    assert cluster_store != threads_store
    assert_same_files(cluster_store, threads_store)
    assert_same_files(cluster_cache, threads_cache)


@pytest.mark.slow
def test_teacher_pass_survives_a_killed_worker(cluster, tmp_path):
    """A worker process is SIGKILLed inside a block of the pass: the nanny restarts it, the
    scheduler reruns the block on a live worker, and the cache equals the undisturbed one."""
    store, weights, flag = tmp_path / "store.zarr", tmp_path / "teacher.safetensors", tmp_path / "killed"
    write_store(store, scheduler=cluster.scheduler.address, workers=2)
    save_teacher(weights)
    write_cache(teacher_job(store, weights, tmp_path / "reference.zarr"), scheduler="threads")

    ticks = []
    job = teacher_job(store, weights, tmp_path / "cache.zarr", job=DyingTeacherJob, flag=str(flag))
    write_cache(job, lambda done, total, rows: ticks.append((done, total)), scheduler=cluster.scheduler.address)
    assert_same_files(tmp_path / "cache.zarr", tmp_path / "reference.zarr")
    assert ticks == [(i, 10) for i in range(11)]  # 6 eval + 4 aug blocks, each once

    killed = int(flag.read_text())
    assert killed not in cluster.run(os.getpid).values()
    removed = [event for _, event in cluster.get_events("all") if event.get("action") == "remove-worker"]
    assert any(str(key).startswith("block-aug-8-16") for event in removed
               for key in event["processing-tasks"])


def fail_on_second_block(block: tuple) -> None:
    if block[1] == 8:
        raise BadImage(f"img-{block[1]}.png: cannot identify image file")


def touch(folder: str, delay: float, block: tuple) -> None:
    """Record that `block` ran in `folder`, after `delay` seconds."""
    Path(folder, f"started-{blocks.block_name(block)}").touch()
    time.sleep(delay)
    Path(folder, blocks.block_name(block)).touch()


class CountsPickling:
    """A block function that counts how often this process serialises it."""

    count = 0

    def __call__(self, block: tuple) -> None:
        pass

    def __getstate__(self) -> dict:
        CountsPickling.count += 1
        return {}


@pytest.mark.slow
def test_block_function_is_sent_once_not_once_per_block(cluster):
    """The function may hold a data set's whole item list (the image store's does)."""
    CountsPickling.count = 0
    blocks.run_blocks(CountsPickling(), blocks.shard_blocks(16 * 8, 8), cluster.scheduler.address)
    assert 1 <= CountsPickling.count < 16


def test_block_error_surfaces_with_its_message(cluster):
    with pytest.raises(BadImage, match="img-8.png: cannot identify image file"):
        blocks.run_blocks(fail_on_second_block, blocks.shard_blocks(24, 8), cluster.scheduler.address)


@pytest.mark.slow
def test_progress_and_two_runs_at_once_on_one_cluster(cluster, tmp_path):
    """Two runs with equal block names (two data sets' first shards) run side by side, each
    its own blocks, and progress counts every block of a run once."""
    work = blocks.shard_blocks(16, 8)
    slow, fast = tmp_path / "slow", tmp_path / "fast"
    slow.mkdir(), fast.mkdir()
    ticks = []
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(blocks.run_blocks, partial(touch, str(slow), 1.0), work, cluster.scheduler.address)
        while not any(slow.iterdir()):
            assert not first.done(), first.result()
            time.sleep(0.01)
        blocks.run_blocks(partial(touch, str(fast), 0.0), work, cluster.scheduler.address,
                          progress=lambda done, total, rows: ticks.append((done, total, rows)))
        first.result(timeout=60)
    names = sorted(blocks.block_name(b) for b in work)
    for folder in (slow, fast):
        assert sorted(p.name for p in folder.iterdir() if not p.name.startswith("started-")) == names
    assert ticks == [(0, 2, 0), (1, 2, 8), (2, 2, 16)]

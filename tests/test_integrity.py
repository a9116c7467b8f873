"""Damaged data at rest: a byte flipped inside a chunk, a truncated or an emptied shard file
are detected on read and by VerifyData, named (array and shard file), and the damaged
output is rebuilt, not reused, by a rerun; clean outputs pass."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from support.build import build
from support.damage import damage, shard_file
from support.slow_runs import SHARD_ROWS, assert_same_files, save_teacher, teacher_job, write_cache, write_store

from cache.reader import TeacherCache
from cache.storage import blocks
from cache.storage.blocks import MANIFEST
from cache.storage.integrity import RERUN, DamagedData, verify, verify_outputs
from pipeline import inference
from pipeline.data.imagestore import ImageStore
from pipeline.teacher.teacher_pass import cache_teacher
from tasks import CacheTeacher, VerifyData

STORE, CACHE = "store/store.zarr", "cache/cache.zarr"  # the layout of a data set's work folder


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """A finished image store and teacher cache, never damaged."""
    root = tmp_path_factory.mktemp("clean")
    write_store(root / STORE)
    save_teacher(root / "teacher.safetensors")
    write_cache(teacher_job(root / STORE, root / "teacher.safetensors", root / CACHE))
    return root


@pytest.fixture
def work(clean, tmp_path) -> Path:
    """A copy of the clean outputs to damage."""
    shutil.copytree(clean, tmp_path / "work")
    return tmp_path / "work"


def test_clean_outputs_pass(clean):
    assert verify(clean / STORE) == [] and verify(clean / CACHE) == []
    assert verify_outputs(clean) == [clean / CACHE, clean / STORE]


@pytest.mark.parametrize("how", ["flip", "truncate", "empty"])
def test_damaged_image_shard_is_named_on_read_and_marked_for_rebuild(work, clean, how):
    file = damage(work / STORE, "images", 1, how)
    with pytest.raises(DamagedData, match="rerun your command") as err:
        ImageStore(work / STORE)
    assert f"array images, shard file {file}" in str(err.value)
    assert [d.file for d in err.value.damage] == [file]
    assert not (work / STORE / MANIFEST).exists()  # Luigi now takes the store as unfinished

    write_store(work / STORE)  # what PrepareDataset does when rerun
    assert_same_files(work / STORE, clean / STORE)


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_damaged_cache_shard_is_named_when_a_student_reads_it_from_disk(work, how):
    file = damage(work / CACHE, "aug/logits", 0, how)
    cache = TeacherCache(work / CACHE, budget=0)  # rows are read from disk batch by batch
    cache.aug_logits.take(np.arange(8, 16))  # rows of an undamaged shard
    with pytest.raises(DamagedData, match=f"array aug/logits, shard file {file}"):
        cache.aug_logits.take(np.arange(3), np.zeros(3, dtype=int))


@pytest.mark.slow
def test_verify_lists_every_damaged_shard_and_a_rerun_rebuilds_them(work, clean):
    flipped = damage(work / STORE, "images", 2, "flip")
    truncated = damage(work / CACHE, "eval/logits", 1, "truncate")
    with pytest.raises(DamagedData) as err:
        verify_outputs(work)
    assert [(d.array, d.file) for d in err.value.damage] == [("eval/logits", truncated), ("images", flipped)]
    assert not (work / STORE / MANIFEST).exists() and not (work / CACHE / MANIFEST).exists()

    write_store(work / STORE)
    write_cache(teacher_job(work / STORE, work / "teacher.safetensors", work / CACHE))
    assert_same_files(work / STORE, clean / STORE)
    assert_same_files(work / CACHE, clean / CACHE)
    assert verify_outputs(work) == [work / CACHE, work / STORE]


@pytest.mark.slow
def test_verify_task_fails_on_damage_and_a_rerun_rebuilds_the_cache(luigi_config):
    assert build(CacheTeacher("demo"))[0]
    assert build(VerifyData("demo"))[0]
    cache = CacheTeacher("demo").cache_path()
    good = {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()}
    damage(cache, "eval/logits", 0, "flip")

    assert not build(VerifyData("demo"))[0]
    ok, ran = build(CacheTeacher("demo"))
    assert ok and [type(t).__name__ for t in ran] == ["CacheTeacher"]
    assert {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()} == good


def test_damage_raised_in_a_dask_worker_process_reaches_the_caller_intact(work):
    file = damage(work / STORE, "images", 0, "flip")
    with pytest.raises(DamagedData) as err:
        ImageStore(work / STORE)
    again = pickle.loads(pickle.dumps(err.value))  # how dask's process workers return it
    assert str(again) == str(err.value) and again.damage[0].file == file


def test_damage_met_by_the_read_ahead_thread_stops_the_pass_naming_the_shard(work, monkeypatch):
    """Where the pass reads ahead on a thread (on an accelerator), a damaged store shard
    stops it with the message a serial read gives: the shard file and what is wrong."""
    store = ImageStore(work / STORE)
    dim = TeacherCache(work / CACHE).eval_features.shape[1]
    file = damage(work / STORE, "images", 1, "flip")
    monkeypatch.setattr(inference, "overlapped", lambda device: True)
    job = teacher_job(work / STORE, work / "teacher.safetensors", work / "again.zarr")
    with pytest.raises(DamagedData, match=f"shard file {file}: ValueError: Stored and computed checksum"):
        cache_teacher(job, store.rows("train"), len(store.labels), dim, {"identity": {}}, "synchronous", 1,
                      SHARD_ROWS)

@pytest.mark.slow  # builds the whole graph
def test_runall_repairs_what_verify_found_and_redoes_nothing_else(luigi_config):
    """The fix VerifyData's message names, `luigi --module tasks RunAll`, rebuilds the
    damaged cache to its former bytes even though every output below it still exists, and
    retrains, re-evaluates and rewrites nothing."""
    from tasks import RunAll
    assert build(RunAll())[0]
    cache = CacheTeacher("demo").cache_path()
    good = {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()}
    work = luigi_config.work / "demo"
    outputs = {p: p.stat().st_mtime_ns for p in work.glob("*/[!.]*") if p.is_file() and "cache-" not in p.parent.name}
    assert any(p.suffix == ".safetensors" for p in outputs)
    damage(cache, "aug/logits", 1, "delete")

    assert not build(VerifyData("demo"))[0]
    assert "RunAll" in RERUN
    ok, ran = build(RunAll())
    assert ok and CacheTeacher("demo").complete()
    assert {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()} == good
    assert {p: p.stat().st_mtime_ns for p in outputs} == outputs
    assert "CacheTeacher" in [type(t).__name__ for t in ran]


def _record_unwritten(output: Path, tag: str, rows: int) -> None:
    """Edit the manifest's record of written rows: rows 8 to 15 of `tag`'s arrays never written."""
    manifest = blocks.read_manifest(output)
    manifest[blocks.WRITTEN] = {**manifest[blocks.WRITTEN], tag: [[0, 8], [16, rows]]}
    (output / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("output,tag,rows,array,reader", [(STORE, "images", 48, "images", ImageStore),
                                                         (CACHE, "aug", 32, "aug/logits", TeacherCache)])
def test_rows_the_manifest_does_not_record_as_written_are_refused_on_open(work, output, tag, rows, array, reader):
    _record_unwritten(work / output, tag, rows)
    with pytest.raises(DamagedData, match="rerun your command") as err:
        reader(work / output)
    assert f"array {array}, shard file {shard_file(work / output, array, 1)}: rows 8 to 15 were never written" \
        in str(err.value)
    assert not (work / output / MANIFEST).exists()  # Luigi now takes it as unfinished


def test_rows_the_manifest_does_not_record_as_written_fail_verify_data(work, luigi_config):
    _record_unwritten(work / STORE, "images", 48)
    shutil.copytree(work, luigi_config.work / "demo")
    assert not build(VerifyData("demo"))[0]
    assert not (luigi_config.work / "demo" / STORE / MANIFEST).exists()
    with pytest.raises(DamagedData, match="array images, shard file .*: rows 8 to 15 were never written"):
        verify_outputs(work)


def test_a_manifest_from_before_the_record_takes_every_row_as_written(work):
    """Outputs finished before manifests recorded written rows stay readable."""
    for output in (STORE, CACHE):
        manifest = blocks.read_manifest(work / output)
        del manifest[blocks.WRITTEN]
        (work / output / MANIFEST).write_text(json.dumps(manifest))
    ImageStore(work / STORE)
    TeacherCache(work / CACHE)
    assert verify_outputs(work) == [work / CACHE, work / STORE]


def test_a_job_is_not_finished_while_a_block_has_no_marker(tmp_path):
    work = blocks.shard_blocks(20, 8, "images")
    blocks.mark_done(tmp_path, work[0])
    blocks.mark_done(tmp_path, work[2])
    with pytest.raises(RuntimeError, match="rows 8 to 15 of images"):
        blocks.finish(tmp_path, {}, work)
    assert blocks.read_manifest(tmp_path) is None

"""The image store and the teacher pass: exact round trip, the same bytes whatever the
parallelism, and the same bytes after a SIGKILL midway and a rerun."""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from support import slow_runs
from support.build import build
from support.kills import Blocks, kill_after_first_block
from support.slow_runs import (
    SHARD_ROWS,
    SIZE,
    SOURCE,
    SOURCE_ARGS,
    assert_same_files,
    encoding,
    save_teacher,
    teacher_job,
    write_cache,
    write_store,
)

from cache.reader import TeacherCache
from cache.storage import blocks
from pipeline import inference
from pipeline.data.imagestore import ImageStore, square
from pipeline.data.source import SPLITS, Items
from pipeline.data.synthetic import CLASSES, SyntheticSource
from tasks.data import PrepareDataset

# The cache's encodings: every logit in float16 (the default), top-3 logits with int8 features,
# top-2 with a sampled tail (its draws must come back the same too), and no logits but the
# teacher's head and int4 features.
ENCODINGS = {"cache.zarr": "", "compact.zarr": "topk=3 feature_dtype=int8",
             "sampled.zarr": "topk=2 tail=sampled samples=8 feature_dtype=none",
             "head.zarr": "logit_dtype=head feature_dtype=int4",
             "rank.zarr": "logit_rank=5 logit_lead=2 logit_dtype=int4"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """An uninterrupted, single-worker store and teacher cache, and their block counts."""
    root = tmp_path_factory.mktemp("reference")
    store_blocks, cache_blocks = Blocks(), Blocks()
    write_store(root / "store.zarr", progress=store_blocks)
    save_teacher(root / "teacher.safetensors")
    for name, spec in ENCODINGS.items():
        write_cache(teacher_job(root / "store.zarr", root / "teacher.safetensors", root / name, **encoding(spec)),
                    cache_blocks)
    return {"root": root, "store_blocks": store_blocks.todo, "cache_blocks": cache_blocks.todo}


@pytest.mark.parametrize("name", ENCODINGS)
def test_overlapped_teacher_pass_writes_the_serial_cache(reference, tmp_path, monkeypatch, name):
    """Reading ahead and bringing the outputs back on threads (as on an accelerator) writes
    the cache the serial pass (the CPU's) writes, byte for byte."""
    monkeypatch.setattr(inference, "overlapped", lambda device: True)
    root = reference["root"]
    write_cache(teacher_job(root / "store.zarr", root / "teacher.safetensors", tmp_path / name,
                            **encoding(ENCODINGS[name])))
    assert_same_files(tmp_path / name, root / name)


def test_store_holds_every_image_squared_with_its_label_id_and_split(reference):
    store = ImageStore(reference["root"] / "store.zarr")
    items = SOURCE.items()
    expected = np.stack([square(SOURCE.load(item), SIZE) for item in items])
    np.testing.assert_array_equal(store.images[np.arange(len(items))], expected)
    assert store.images.dtype == np.uint8 and store.size == SIZE and store.classes == CLASSES
    assert store.labels.tolist() == [item.label for item in items]
    assert store.ids.tolist() == [item.id for item in items]
    assert store.split.tolist() == [SPLITS.index(item.split) for item in items]
    assert store.manifest["split_counts"] == {"train": 32, "val": 0, "test": 16}


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_parallel_store_equals_single_worker_store(reference, tmp_path, scheduler):
    write_store(tmp_path / "store.zarr", scheduler=scheduler, workers=2)
    assert_same_files(tmp_path / "store.zarr", reference["root"] / "store.zarr")


class CountedItems(Items):
    """Items that count the rows pickled, here in the process that sends them."""
    pickled = 0

    def __reduce__(self):
        CountedItems.pickled += len(self)
        return CountedItems, (self.ids, self.labels, self.splits, self.keys)


@dataclass
class CountedSource(SyntheticSource):
    def items(self) -> CountedItems:
        items = super().items()
        return CountedItems(items.ids, items.labels, items.splits, items.keys)


@pytest.mark.slow
def test_store_shards_sent_to_processes_carry_their_own_items_only(tmp_path):
    # Each item once, not once a shard: all of them with every shard made the build's cost
    # grow with N squared (235 images/s at 200,000 images, ~2,800 once fixed).
    source = CountedSource(**SOURCE_ARGS)
    CountedItems.pickled = 0
    write_store(tmp_path / "store.zarr", source, scheduler="processes", workers=2)
    assert CountedItems.pickled == len(source.items())


@pytest.mark.slow
def test_killed_store_preparation_resumes_to_the_same_store(reference, tmp_path):
    store = tmp_path / "store.zarr"
    done = kill_after_first_block(["store", str(store)], store, tmp_path / "log")
    assert 1 <= done < reference["store_blocks"]
    assert not (store / blocks.MANIFEST).exists()
    with pytest.raises(FileNotFoundError, match="not a finished image store"):
        ImageStore(store)

    rerun = Blocks()
    write_store(store, progress=rerun)
    assert rerun.todo == reference["store_blocks"] - done  # only the unfinished shards were redone
    assert_same_files(store, reference["root"] / "store.zarr")


@pytest.mark.slow
@pytest.mark.parametrize("name", ENCODINGS)
def test_killed_teacher_pass_resumes_to_the_same_cache_and_its_seconds_add_up(reference, tmp_path, name):
    root, cache, spec = reference["root"], tmp_path / name, ENCODINGS[name]
    args = [root / "store.zarr", root / "teacher.safetensors", cache]
    extra = spec.split()

    def recorded() -> bool:  # the run to be killed has recorded its seconds so far
        return blocks.Stopwatch(cache).before > 0

    done = kill_after_first_block(["cache", *map(str, args), *extra], cache, tmp_path / "log", recorded)
    assert 1 <= done < reference["cache_blocks"]
    with pytest.raises(FileNotFoundError, match="not a finished teacher cache"):
        TeacherCache(cache)
    stopwatch = blocks.Stopwatch(cache)
    killed = stopwatch.before  # what the killed run recorded: at least its finished blocks' sleeps
    assert killed >= slow_runs.SlowTeacherJob.delay

    rerun, tic = Blocks(), time.perf_counter()
    write_cache(teacher_job(*args, **encoding(spec)), rerun, stopwatch=stopwatch)
    resumed = time.perf_counter() - tic
    assert stopwatch.seconds() >= killed + resumed
    assert rerun.todo == reference["cache_blocks"] - done
    assert_same_files(cache, root / name)  # the record went with the block markers


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["store", "cache"])
def test_build_resumed_with_other_shard_rows_by_two_workers_keeps_its_shards(reference, tmp_path, kind, caplog):
    """Killed with 8-row shards, resumed with shard_rows = 12 (and chunk_rows = 4) by two threads:
    blocks of 12 rows would share the arrays' 8-row shards, and two threads writing one shard
    lose one's rows; the blocks are cut by the shards the arrays have, and the output is the
    clean build's."""
    root, out = reference["root"], tmp_path / f"{kind}.zarr"
    inputs = [root / "store.zarr", root / "teacher.safetensors"] if kind == "cache" else []
    done = kill_after_first_block([kind, *map(str, inputs), str(out)], out, tmp_path / "log")

    rerun = Blocks()
    resume = {"progress": rerun, "scheduler": "threads", "workers": 2, "shard_rows": 12}
    if kind == "store":
        write_store(out, chunk_rows=4, **resume)
        assert "resuming with the 1-row chunks it was started with, not chunk_rows = 4" in caplog.text
    else:
        write_cache(teacher_job(*inputs, out), **resume)
    assert f"resuming with the {SHARD_ROWS}-row shards it was started with" in caplog.text
    assert rerun.todo == reference[f"{kind}_blocks"] - done
    assert_same_files(out, root / f"{kind}.zarr")


def test_block_killed_while_writing_its_shard_is_redone_to_the_same_cache(reference, tmp_path):
    """A kill inside a shard write leaves zarr's temporary file instead of the shard, and no
    marker: the rerun redoes that block alone and removes the leftover."""
    root, cache = reference["root"], tmp_path / "cache.zarr"
    shutil.copytree(root / "cache.zarr", cache)
    (cache / blocks.MANIFEST).unlink()
    store = ImageStore(root / "store.zarr")
    killed = ("aug", SHARD_ROWS, 2 * SHARD_ROWS)
    for block in (blocks.shard_blocks(len(store.labels), SHARD_ROWS, "eval") +
                  blocks.shard_blocks(len(store.rows("train")), SHARD_ROWS, "aug")):
        if block != killed:
            blocks.mark_done(cache, block)
    shard = cache / "aug" / "logits" / "c" / "1" / "0" / "0"
    half = shard.read_bytes()[: shard.stat().st_size // 2]
    shard.unlink()
    shard.with_suffix(".0123abcd.partial").write_bytes(half)

    rerun = Blocks()
    write_cache(teacher_job(root / "store.zarr", root / "teacher.safetensors", cache), rerun)
    assert rerun.todo == 1
    assert_same_files(cache, root / "cache.zarr")


def _folder_with_truncated_images(root: Path) -> Path:
    """Two classes of three images and a truncated one each: rows 3 and 7, in shards 1 and 3 of 2 rows."""
    from PIL import Image
    for cls in ("a b", "c"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 16), (40 * i, 90, 200)).save(root / cls / f"{i}.png")
        good = (root / cls / "0.png").read_bytes()
        (root / cls / "bad.png").write_bytes(good[: len(good) // 2])
    return root


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_bad_images_stop_naming_each_and_the_fix_or_are_skipped_and_recorded(tmp_path, monkeypatch, policy):
    from pipeline.data import imagestore
    from pipeline.data.imagefolder import ImageFolder
    from pipeline.data.source import BadImage
    source = ImageFolder(_folder_with_truncated_images(tmp_path / "src"), holdout=0.0)
    items, out = source.items(), tmp_path / "store.zarr"
    write = lambda: imagestore.write_image_store(source, items, out, 8, {}, on_bad_image=policy,  # noqa: E731
                                                 shard_rows=2)
    if policy == "fail":
        with pytest.raises(BadImage, match=r"2 of 8 images cannot be decoded:\n  .*a b/bad.png.*\n  .*c/bad.png.*"
                                           r"\n.*`\[data\] on_bad_image = skip`"):
            write()
        assert blocks.read_manifest(out) is None  # nothing a rerun would take as complete
        with pytest.raises(FileNotFoundError, match="PrepareDataset"):
            ImageStore(out)
        monkeypatch.setattr(imagestore, "NAMED", 1)  # a long list is cut short, the rest counted
        with pytest.raises(BadImage, match=r"a b/bad.png.*\n  and 1 more\n"):
            write()
        return
    write()
    store = ImageStore(out)
    assert [s["id"] for s in store.manifest["skipped"]] == ["a b/bad.png", "c/bad.png"]
    assert len(store.rows("train")) == len(items) - 2


def test_shuffled_rows_hold_the_same_images_labels_and_splits_in_a_seeded_order(luigi_config):
    assert build(PrepareDataset("demo"))[0]
    plain, prints = ImageStore(PrepareDataset("demo").store_path()), {PrepareDataset("demo").fingerprint()}
    luigi_config("data", "shuffle_rows", "true")
    assert build(PrepareDataset("demo"))[0]
    shuffled = ImageStore(PrepareDataset("demo").store_path())
    prints.add(PrepareDataset("demo").fingerprint())
    assert len(prints) == 2  # a store of its own; a store in the source's order keeps its fingerprint

    where = {image_id: row for row, image_id in enumerate(plain.ids)}
    rows = np.array([where[image_id] for image_id in shuffled.ids])
    assert sorted(rows) == list(range(len(plain.ids))) and not np.array_equal(rows, np.sort(rows))
    np.testing.assert_array_equal(shuffled.labels, plain.labels[rows])
    np.testing.assert_array_equal(shuffled.split, plain.split[rows])
    np.testing.assert_array_equal(shuffled.images.take(np.arange(len(rows))), plain.images.take(rows))

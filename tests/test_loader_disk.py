"""The loader's read orders ([train] order): random and shards serve every training image
once an epoch with the same view, label and teacher targets, from memory or from disk
(budget 0; in shards order by the loader's thread or by reading processes, which decode and
render too, batch for batch alike), raw or jpeg; the shards order is seeded and walks whole
shards; damage read in shards order is still named."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import zarr
from support.config import TINY_VIT
from support.damage import damage
from support.loaders import BATCH, assert_same, assert_same_batches, loader, served

from cache.reader import TeacherCache
from cache.storage.integrity import DamagedData
from pipeline.data import imagestore
from pipeline.data.imagestore import ImageStore, write_image_store
from pipeline.data.readers import carve_validation
from pipeline.data.synthetic import SyntheticSource
from pipeline.spec import parse_spec
from pipeline.training import loader as loader_module
from pipeline.training.build import Distill, TrainSetup, build_run
from pipeline.training.distributed import Ranks
from pipeline.training.loader import ORDERS
from pipeline.training.settings import TrainSettings, fingerprint_fields
from pipeline.training.train import fit
from pipeline.views.records import Recipe
from tasks.config import train_settings

EPOCHS = (0, 1)
MEMORY = 1 << 40
# (memory budget, order, reading processes) of every loader compared with the first
WAYS = [(MEMORY, "random", 0), (MEMORY, "shards", 0), (0, "random", 0), (0, "shards", 0), (0, "shards", 2)]


def tiny_store(path, **kwargs):
    """tiny_data's store written again, with write_image_store's `kwargs`: the same rows, so
    the same cache serves it."""
    source = SyntheticSource(seed=1, train_per_class=6, test_per_class=2, size=32)
    write_image_store(source, carve_validation(source.items(), 0.2, 0), path, 32, {}, scheduler="synchronous",
                      shard_rows=16, **kwargs)
    return path


@pytest.fixture(scope="module")
def jpeg_store(tiny_data, tmp_path_factory):
    return tiny_store(tmp_path_factory.mktemp("jpeg") / "store.zarr", jpeg_quality=90)


@pytest.mark.parametrize("fmt", ["raw", "jpeg"])
@pytest.mark.parametrize("cached", [True, False])
def test_both_orders_serve_each_image_its_view_and_targets_from_memory_or_disk(tiny_data, jpeg_store, fmt, cached):
    store = tiny_data["store"] if fmt == "raw" else jpeg_store
    cache = tiny_data["cache"] if cached else None
    loaders = [loader(store, cache, budget, order, read_processes=processes) for budget, order, processes in WAYS]
    for epoch in EPOCHS:
        expected = served(loaders[0], epoch)
        assert sorted(expected) == list(range(len(loaders[0].rows)))  # each row once
        for other in loaders[1:]:
            assert_same(served(other, epoch), expected)


def test_read_processes_serve_the_batches_of_the_loader_s_thread(tiny_data, jpeg_store):
    """Batch for batch, the same tensors and weights from 0, 1 or 2 processes."""
    served_by = {processes: [list(loader(jpeg_store, tiny_data["cache"], 0, "shards", read_processes=processes)
                                  .epoch(epoch)) for epoch in EPOCHS] for processes in (0, 1, 2)}
    for processes in (1, 2):
        for got, expected in zip(served_by[processes], served_by[0], strict=True):
            assert_same_batches(got, expected)


@pytest.mark.parametrize("order,processes", [("random", 0), ("shards", 0), ("shards", 2)])
def test_an_epoch_resumed_at_a_batch_serves_the_rest_and_reads_no_window_before_it(tiny_data, jpeg_store, order,
                                                                                  processes, monkeypatch):
    """What a run stopped within an epoch goes on with: the batches from the next one on."""
    whole = list(loader(jpeg_store, tiny_data["cache"], 0, order, read_processes=processes, window=1).epoch(1))
    start = len(whole) - 2
    train = loader(jpeg_store, tiny_data["cache"], 0, order, read_processes=processes, window=1)
    held = []
    hold = type(train._order).hold
    monkeypatch.setattr(type(train._order), "hold", lambda self, window: held.append(window) or hold(self, window))
    assert_same_batches(list(train.epoch(1, start=start)), whole[start:])
    if order == "shards" and not processes:  # the processes hold windows in their own copies
        rest = set(train.positions(1)[start * BATCH:].tolist())
        windows = train._order.windows(1)
        assert [w.positions.tolist() for w in held] == [
            w.positions.tolist() for w in windows if rest & set(w.positions.tolist())]
        assert len(held) < len(windows)


def test_read_processes_decode_and_render_what_they_read(tiny_data, jpeg_store, monkeypatch):
    """The loader's thread only puts the processes' batch parts together."""
    def refuse(*args, **kwargs):
        raise AssertionError("the loader's thread decoded or rendered")

    train = loader(jpeg_store, tiny_data["cache"], 0, "shards", read_processes=2)
    monkeypatch.setattr(imagestore, "decode_jpeg", refuse)
    monkeypatch.setattr(loader_module, "render", refuse)
    assert sum(len(batch.labels) for batch in train.epoch(0)) == len(train.rows)


def test_order_auto_is_shards_for_a_store_above_its_memory_budget_and_random_below(tiny_data):
    for budget, resolved in ((0, "shards"), (MEMORY, "random")):
        auto = loader(tiny_data["store"], tiny_data["cache"], budget, "auto")
        assert auto.order == resolved
        assert np.array_equal(auto.positions(1), loader(tiny_data["store"], None, budget, resolved).positions(1))


def test_random_order_is_today_s(tiny_data):
    """Positions and views as the loader drew them before orders could be chosen."""
    train = loader(tiny_data["store"], tiny_data["cache"], MEMORY, "random")
    rng = np.random.default_rng([0, 3])
    assert np.array_equal(train.positions(3), rng.permutation(len(train.rows)))


def test_shards_order_walks_whole_shards_each_epoch_its_own(tiny_data):
    train = loader(tiny_data["store"], None, MEMORY, "shards", window=1)
    shard_of = train.rows // train.store.images.shard_rows
    orders = [train.positions(epoch) for epoch in range(3)]
    for order in orders:
        assert sorted(order) == list(range(len(train.rows)))
        runs = shard_of[order][np.r_[True, np.diff(shard_of[order]) != 0]]
        assert len(runs) == len(np.unique(shard_of))  # window 1: one run per shard
    assert np.array_equal(orders[0], loader(tiny_data["store"], None, 0, "shards", window=1).positions(0))
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[0], loader(tiny_data["store"], None, MEMORY, "random").positions(0))


def test_ranks_share_the_shards_order(tiny_data):
    one = served(loader(tiny_data["store"], tiny_data["cache"], 0, "shards"), 0)
    ranks = [loader(tiny_data["store"], tiny_data["cache"], 0, "shards", ranks=Ranks(r, 2)) for r in (0, 1)]
    positions = ranks[0].positions(0)
    for r, train in enumerate(ranks):
        labels = torch.cat([b.labels for b in train.epoch(0)])
        mine = np.concatenate([positions[i:i + BATCH][r::2] for i in range(0, len(positions), BATCH)])
        assert torch.equal(labels, torch.stack([one[int(p)][1] for p in mine]))


def test_a_cache_of_other_training_rows_is_refused_in_either_order(tiny_data, tmp_path):
    source = SyntheticSource(seed=1, train_per_class=6, test_per_class=2, size=32)
    write_image_store(source, carve_validation(source.items(), 0.5, 0), tmp_path / "store.zarr", 32, {},
                      scheduler="synchronous", shard_rows=16)
    for order in ORDERS:
        with pytest.raises(ValueError, match=f"covers other training rows than image store {tmp_path}"):
            loader(tmp_path / "store.zarr", tiny_data["cache"], MEMORY, order)


@pytest.mark.parametrize("processes", [0, 2])
@pytest.mark.parametrize("output,array", [("store", "images"), ("cache", "aug/logits")])
def test_a_damaged_shard_read_in_shards_order_is_named(tiny_data, tmp_path, output, array, processes):
    paths = {"store": tmp_path / "store.zarr", "cache": tmp_path / "cache.zarr"}
    shutil.copytree(tiny_data["store"], paths["store"])
    shutil.copytree(tiny_data["cache"], paths["cache"])
    file = damage(paths[output], array, 1, "flip")
    with pytest.raises(DamagedData, match="rerun your command") as err:
        for _ in loader(paths["store"], paths["cache"], 0, "shards", read_processes=processes).epoch(0):
            pass
    assert f"array {array}, shard file {file}" in str(err.value)


@pytest.mark.parametrize("quality", [None, 90])
def test_a_store_of_many_images_a_chunk_serves_what_one_image_a_chunk_does(tiny_data, jpeg_store, tmp_path, quality):
    chunked = tiny_store(tmp_path / "store.zarr", jpeg_quality=quality, chunk_rows=4)
    assert zarr.open_array(str(chunked / "images"), mode="r").chunks[0] == 4
    one = jpeg_store if quality else tiny_data["store"]
    for epoch in EPOCHS:
        expected = served(loader(one, tiny_data["cache"], 0, "shards"), epoch)
        assert_same(served(loader(chunked, tiny_data["cache"], 0, "shards"), epoch), expected)
        assert_same(served(loader(chunked, tiny_data["cache"], 0, "random"), epoch), expected)
    file = damage(chunked, "images", 1, "flip")
    with pytest.raises(DamagedData, match=f"array images, shard file {file}"):
        for _ in loader(chunked, None, 0, "shards").epoch(0):
            pass
    with pytest.raises(ValueError, match="chunk_rows = 3 must divide shard_rows = 16"):
        tiny_store(tmp_path / "other.zarr", chunk_rows=3)


def test_the_order_enters_the_fingerprint_only_when_it_is_not_random():
    base = dict(epochs=1, batch_size=8, lr=1e-3, weight_decay=0.0, warmup_epochs=0.0, image_size=32, seed=0,
                augment=True)
    off = dict(recipe=Recipe(), label_smoothing=0.0)
    random = fingerprint_fields(TrainSettings(**base, **off, order="random", order_window=4))
    assert random == base  # as before the setting: runs keep their fingerprints
    shards = fingerprint_fields(TrainSettings(**base, **off, order="shards", order_window=4))
    assert shards == {**base, "order": "shards", "order_window": 4}


def test_a_student_trains_in_shards_order_from_disk(tiny_data, tmp_path):
    name, kwargs = parse_spec(TINY_VIT)
    settings = train_settings(epochs=1, batch_size=8, image_size=32, order="shards", order_window=1)
    setup = TrainSetup(model=name, kwargs=kwargs, settings=settings, read_processes=1,
                       distill=Distill(alpha=0.7, temperature=4.0, beta=0.0, feature_loss="mse", hard=False))
    history = fit(build_run(setup, ImageStore(tiny_data["store"], 0), TeacherCache(tiny_data["cache"], 0)), tmp_path)
    assert [h["epoch"] for h in history] == [1] and np.isfinite(history[0]["loss"])

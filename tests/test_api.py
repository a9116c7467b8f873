"""The loader API (pipeline/api.py): the batches TrainStudent trains on, by path or by data set
name, for a rank or all; the test images; clear refusals; and the example that trains a
model of its own with it (docs/examples/own_loop.py)."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from support import REPO
from support.build import build
from support.config import TINY_VIT
from support.loaders import assert_same_batches

from cache.reader import CacheMismatch
from pipeline.api import open_cached
from pipeline.data.imagestore import write_image_store
from pipeline.data.readers import carve_validation
from pipeline.data.synthetic import SyntheticSource
from pipeline.inference import predict_rows
from pipeline.spec import parse_spec
from pipeline.training.build import Distill, TrainSetup, build_run
from tasks.config import train_settings
from tasks.teacher import CacheTeacher

EXAMPLE = "docs/examples/own_loop.py"


def test_batches_are_the_ones_a_kd_student_trains_on(tiny_data):
    name, kwargs = parse_spec(TINY_VIT)
    setup = TrainSetup(model=name, kwargs=kwargs, settings=train_settings(batch_size=8, image_size=32, seed=3),
                       distill=Distill(0.7, 4.0, 0.0, "mse", False))
    data = open_cached(store=tiny_data["store"], cache=tiny_data["cache"])
    run = build_run(setup, data.store, data.cache)
    for epoch in (0, 1):
        assert_same_batches(list(data.batches(epoch, 8, seed=3)), list(run.loader.epoch(epoch)))
    first = next(data.batches(0, 8, seed=3))
    assert first.teacher_logits.shape == (8, len(data.classes)) and first.images.shape == (8, 3, 32, 32)


def test_ranks_share_each_batch_and_a_baseline_has_no_teacher_outputs(tiny_data):
    data = open_cached(store=tiny_data["store"], cache=tiny_data["cache"])
    whole = list(data.batches(1, 8))
    shares = [list(data.batches(1, 8, rank=r, world_size=2)) for r in (0, 1)]
    for batch, a, b in zip(whole, *shares, strict=True):
        assert sorted(torch.cat([a.labels, b.labels]).tolist()) == sorted(batch.labels.tolist())
        assert a.weight + b.weight == pytest.approx(2.0)
    plain = next(data.batches(0, 8, teacher=False))
    assert plain.teacher_logits is None and plain.teacher_features is None
    assert next(open_cached(store=tiny_data["store"]).batches(0, 8)).teacher_logits is None


def test_eval_batches_are_the_test_split_seen_whole(tiny_data):
    data = open_cached(store=tiny_data["store"], cache=tiny_data["cache"])
    rows = data.store.rows("test")
    got = list(data.eval_batches("test", batch_size=5))
    assert torch.equal(torch.cat([labels for _, labels in got]), torch.as_tensor(data.store.labels[rows]))
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, len(data.classes)))
    with torch.no_grad():
        mine = torch.cat([net(images) for images, _ in got]).numpy()

    class Pair(torch.nn.Module):  # the project's evaluation wants (logits, features)
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x), self.net(x)

    expected, _ = predict_rows(Pair(), data.store, rows, 32)
    np.testing.assert_allclose(mine, expected, rtol=1e-5, atol=1e-6)


def test_a_cache_of_another_store_or_an_unfinished_one_is_refused(tiny_data, tmp_path):
    source = SyntheticSource(seed=2, train_per_class=6, test_per_class=2, size=32)
    other = tmp_path / "other.zarr"
    write_image_store(source, carve_validation(source.items(), 0.2, 0), other, 32, {"fingerprint": "another"},
                      scheduler="synchronous", shard_rows=16)
    with pytest.raises(CacheMismatch, match="store"):
        open_cached(store=other, cache=tiny_data["cache"])
    with pytest.raises(FileNotFoundError, match="not a finished teacher cache"):
        open_cached(store=tiny_data["store"], cache=tmp_path / "none.zarr")
    with pytest.raises(ValueError, match="not both"):
        open_cached("demo", store=tiny_data["store"])


@pytest.mark.slow
def test_a_data_set_by_name_is_the_tasks_outputs(luigi_config):
    with pytest.raises(FileNotFoundError, match="luigi --module tasks CacheTeacher --dataset demo"):
        open_cached("demo")
    with pytest.raises(ValueError, match="no data set 'elsewhere'"):
        open_cached("elsewhere")
    assert build(CacheTeacher("demo"))[0]
    data = open_cached("demo")
    assert data.cache.path == CacheTeacher("demo").cache_path()
    assert next(data.batches(0, 4)).teacher_logits is not None


@pytest.mark.slow
def test_the_example_trains_a_model_of_its_own_with_and_without_the_teacher(tiny_data):
    for flags in ([], ["--no-teacher"]):
        done = subprocess.run([sys.executable, EXAMPLE, "--store", str(tiny_data["store"]), "--cache",
                               str(tiny_data["cache"]), "--epochs", "1", "--batch-size", "8", *flags],
                              capture_output=True, text=True, timeout=300, cwd=REPO)
        assert done.returncode == 0, done.stderr[-3000:]
        assert re.search(r"test top-1 \d+\.\d%", done.stdout), done.stdout

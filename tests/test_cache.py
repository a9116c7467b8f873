"""The teacher cache: what a student reads equals what the teacher would say online
about exactly the images the student sees, and a foreign cache is refused."""
import dataclasses

import numpy as np
import pytest
import timm
import torch
from support.config import TEACHER

import models
from cache.reader import CacheMismatch, TeacherCache
from pipeline.data.imagestore import ImageStore
from pipeline.runtime.device import Precision
from pipeline.teacher.teacher_pass import cache_teacher
from pipeline.training.loader import TrainLoader
from pipeline.training.losses import DistillationLoss


def online_teacher(tiny_data, classes):
    net = models.create(TEACHER, classes)
    return models.load_weights(net, tiny_data["weights"]).eval()


@pytest.fixture(scope="module")
def caches(tiny_data, tmp_path_factory):
    """The tiny teacher's cache by precision of the teacher pass: fp32 and bf16."""
    job = dataclasses.replace(tiny_data["job"], out=str(tmp_path_factory.mktemp("bf16") / "cache.zarr"),
                              precision="bf16")
    store = ImageStore(tiny_data["store"])
    dim = online_teacher(tiny_data, len(store.classes)).num_features
    cache_teacher(job, store.rows("train"), len(store.labels), dim, {"identity": tiny_data["identity"]},
                  "synchronous", 1, 16)
    return {"fp32": tiny_data["cache"], "bf16": job.out}


# Largest |cached - online| of the teacher's logits, on its own views. Measured: fp32 about
# 1e-3 (the float16 store); bf16 exactly 0 (bf16 values this small are exact in float16,
# and CPU bf16 kernels gave the same outputs at the pass's and the loader's batch sizes),
# so 1e-2 (about one bf16 step at |logit| ~ 1) is margin. The loss: measured relative
# deviations up to 9e-6 under bf16 (the features' float16 rounding), held to 1e-3 in both.
LOGIT_TOLERANCE = {"fp32": 2e-3, "bf16": 1e-2}


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("beta,feature_loss", [(0.0, "mse"), (0.5, "mse"), (0.5, "cosine")])
def test_cached_loss_equals_online_loss_on_replayed_views(tiny_data, caches, precision, beta, feature_loss):
    """Under fp32 and under bf16 autocast (teacher pass, student and online teacher alike)."""
    store, cache = ImageStore(tiny_data["store"]), TeacherCache(caches[precision])
    teacher = online_teacher(tiny_data, len(store.classes))
    loader = TrainLoader(store, 32, 8, seed=0, cache=cache)
    torch.manual_seed(0)
    student = models.create("resnet10t", len(store.classes))
    loss_fn = DistillationLoss(alpha=0.7, temperature=4, beta=beta, feature_loss=feature_loss,
                               student_dim=student.num_features, teacher_dim=cache.eval_features.shape[1])
    autocast, tol = Precision(precision).autocast(torch.device("cpu")), LOGIT_TOLERANCE[precision]
    for epoch in (0, 1):
        for batch in loader.epoch(epoch):
            with torch.no_grad():
                with autocast:
                    logits, features = student(batch.images)
                    online_logits, online_features = teacher(batch.images)
                    flipped = teacher(batch.images.flip(-1))[0]
                logits, features, online_logits, online_features, flipped = (
                    t.float() for t in (logits, features, online_logits, online_features, flipped))
                cached = loss_fn(logits, batch.labels, batch.teacher_logits, features, batch.teacher_features)
                online = loss_fn(logits, batch.labels, online_logits, features, online_features)
            assert torch.allclose(batch.teacher_logits.float(), online_logits, rtol=tol, atol=tol)
            assert torch.allclose(cached, online, rtol=1e-3, atol=1e-4)
            # The same check fails on any other view: mirrored images give other targets.
            assert not torch.allclose(batch.teacher_logits.float(), flipped, rtol=tol, atol=tol)


def test_loader_replays_different_views_across_epochs(tiny_data):
    store, cache = ImageStore(tiny_data["store"]), TeacherCache(tiny_data["cache"])
    loader = TrainLoader(store, 32, 1000, seed=0, cache=cache)
    first, second = next(loader.epoch(0)), next(loader.epoch(1))
    assert not torch.equal(first.teacher_logits.sort(0).values, second.teacher_logits.sort(0).values)
    again = next(TrainLoader(store, 32, 1000, seed=0, cache=cache).epoch(0))
    assert torch.equal(first.images, again.images) and torch.equal(first.teacher_logits, again.teacher_logits)


def test_loader_never_builds_a_model(tiny_data, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the training loader built a model")
    monkeypatch.setattr(timm, "create_model", forbidden)
    monkeypatch.setattr(models, "create", forbidden)
    store, cache = ImageStore(tiny_data["store"]), TeacherCache(tiny_data["cache"])
    batches = list(TrainLoader(store, 32, 16, seed=0, cache=cache).epoch(0))
    assert sum(len(b.labels) for b in batches) == len(store.rows("train"))
    assert all(b.teacher_logits is not None for b in batches)


def test_cache_for_another_teacher_is_refused(tiny_data):
    cache = TeacherCache(tiny_data["cache"])
    cache.check(tiny_data["identity"])  # its own identity passes
    wrong = {**tiny_data["identity"], "views": 8, "teacher_sha256": "abc"}
    with pytest.raises(CacheMismatch, match=r"views: cache has 2, expected 8.*teacher_sha256"):
        cache.check(wrong)


def test_eval_view_outputs_are_the_teacher_on_whole_images(tiny_data):
    store, cache = ImageStore(tiny_data["store"]), TeacherCache(tiny_data["cache"])
    teacher = online_teacher(tiny_data, len(store.classes))
    rows = store.rows("test")
    from pipeline.inference import predict_rows
    logits, features = predict_rows(teacher, store, rows, 32)
    assert np.allclose(cache.eval_logits[rows], logits, rtol=2e-3, atol=2e-3)
    assert np.allclose(cache.eval_features[rows], features, rtol=2e-3, atol=2e-3)


def test_stage_maps_of_the_eval_view_are_cached_when_asked(tiny_data, tmp_path):
    import dataclasses

    import zarr

    from pipeline.teacher.teacher_pass import cache_teacher
    from pipeline.views.records import render, whole_views
    store = ImageStore(tiny_data["store"])
    teacher = online_teacher(tiny_data, len(store.classes))
    shapes = teacher.stage_shapes((1, 2), 32)
    assert shapes == {1: (80, 4, 4), 2: (160, 2, 2)}  # convnext_atto at 32 px
    job = dataclasses.replace(tiny_data["job"], out=str(tmp_path / "cache.zarr"), stages=(1, 2))
    cache_teacher(job, store.rows("train"), len(store.labels), teacher.num_features,
                  {"identity": tiny_data["identity"]}, "synchronous", 1, 16, stage_shapes=shapes)
    group = zarr.open_group(job.out, mode="r")
    rows = np.arange(len(store.labels))
    with torch.inference_mode():
        _, _, maps = teacher.forward_with_stages(render(store.images[rows], whole_views(len(rows), 32), 32), (1, 2))
    for stage, expected in zip((1, 2), maps):
        assert np.allclose(group[f"eval/stages/{stage}"][...], expected.numpy(), rtol=5e-3, atol=5e-3)
    assert "stages" not in TeacherCache(tiny_data["cache"]).group["eval"]  # only when asked
    with pytest.raises(ValueError, match="stages 0 to 3"):
        teacher.stage_shapes((4,), 32)


@pytest.mark.slow
def test_any_shard_size_and_batch_size_give_the_same_cache(tiny_data, tmp_path):
    """Shards of several teacher batches and a shard size that is no multiple of the
    chunk size hold what one batch per shard does."""
    import zarr

    store = ImageStore(tiny_data["store"])
    dim = online_teacher(tiny_data, len(store.classes)).num_features
    groups = []
    for name, shard_rows, batch_size in (("one-batch", 16, 64), ("many-batches", 24, 4)):
        job = dataclasses.replace(tiny_data["job"], out=str(tmp_path / name), views=3, batch_size=batch_size)
        cache_teacher(job, store.rows("train"), len(store.labels), dim, {"identity": tiny_data["identity"]},
                      "synchronous", 1, shard_rows)
        groups.append(zarr.open_group(job.out, mode="r"))
    one, many = groups
    assert many["aug/logits"].shards[0] == 24 and 24 % many["aug/logits"].chunks[0] == 0
    assert np.array_equal(one["aug/params"][...], many["aug/params"][...])
    for name in ("eval/logits", "eval/features", "aug/logits", "aug/features"):
        assert np.allclose(one[name][...], many[name][...], rtol=2e-3, atol=2e-3), name

"""The training recipe (RandAugment, mixup, cutmix, label smoothing) replayed from the cache:
the loader serves, pixel for pixel, the augmented and mixed image the teacher saw for each
record, with the teacher's outputs for it; a record replays identically in any order, batch
or process; mixed labels sum to one and weigh what the pixels show."""
from __future__ import annotations

import dataclasses
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support.build import build
from support.config import TEACHER
from support.loaders import assert_same, loader, served

import models
from cache.reader import TeacherCache
from pipeline.data.imagestore import ImageStore, pixels
from pipeline.inference import view_batches
from pipeline.teacher.teacher_pass import cache_teacher
from pipeline.training.loader import TrainLoader
from pipeline.training.losses import DistillationLoss
from pipeline.training.settings import fingerprint_fields
from pipeline.views.records import (
    MIX,
    Partners,
    Recipe,
    image_rows,
    partner_rows,
    partner_weight,
    randaugment,
    random_views,
    render,
)
from tasks import CacheTeacher, FineTuneTeacher, RunAll, TrainStudent
from tasks.config import train_settings

RECIPE = Recipe(randaugment=(2, 9), mixup=0.8, cutmix=1.0)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def recipe_cache(tiny_data, tmp_path_factory):
    """tiny_data's teacher cache, its 2 views a training image drawn by RECIPE."""
    job = dataclasses.replace(tiny_data["job"], out=str(tmp_path_factory.mktemp("recipe") / "cache.zarr"),
                              recipe=RECIPE)
    store = ImageStore(tiny_data["store"])
    teacher = models.create(TEACHER, len(store.classes))
    cache_teacher(job, store.rows("train"), len(store.labels), teacher.num_features,
                  {"identity": tiny_data["identity"]}, "synchronous", 1, 16)
    return job.out


def teacher_net(tiny_data, classes: int) -> torch.nn.Module:
    return models.load_weights(models.create(TEACHER, classes), tiny_data["weights"]).eval()


def seen_by_teacher(store: ImageStore, cache: TeacherCache, batch_size: int) -> torch.Tensor:
    """Every (training image, view) as the teacher pass renders it, (T * V, 3, 32, 32)."""
    params = cache.aug_params[np.arange(len(cache.aug_rows))]
    return torch.cat(list(view_batches(store.images, cache.aug_rows, params, 32, batch_size, recipe=RECIPE)))


def test_the_cache_holds_recipe_records_that_mix_and_augment(recipe_cache):
    cache = TeacherCache(recipe_cache)
    records = cache.aug_params[np.arange(len(cache.aug_rows))].reshape(-1, RECIPE.width)
    assert cache.attrs["recipe"] == dataclasses.asdict(RECIPE) | {"randaugment": [2, 9]}
    blend = records[:, 2 * RECIPE.own + 1]
    assert (blend > 0).all()  # mix_prob 1: every view is mixed, by mixup (blend < 1) or cutmix (1)
    assert 0 < (blend == 1).mean() < 1
    ops = records[:, 5:RECIPE.own:2]
    assert len(np.unique(ops)) > 5


def test_the_pass_draws_each_record_as_from_every_training_row(tiny_data, recipe_cache):
    """A block of the pass reads only the training rows near its own to draw partners."""
    store, cache = ImageStore(tiny_data["store"]), TeacherCache(recipe_cache)
    rows = store.rows("train")
    expected = random_views(0, rows, cache.views, 32, RECIPE, Partners(rows, store.images.shard_rows))
    assert np.array_equal(cache.aug_params[np.arange(len(rows))], expected)


@pytest.mark.parametrize("batch_size", [16, 6])  # the pass's own batches, and others
def test_the_loader_replays_the_very_image_the_teacher_saw(tiny_data, recipe_cache, batch_size):
    store, cache = ImageStore(tiny_data["store"]), TeacherCache(recipe_cache)
    seen = seen_by_teacher(store, cache, batch_size)
    train = TrainLoader(store, 32, 8, seed=0, cache=cache, recipe=RECIPE)
    for epoch in (0, 1):
        order, views = train.draw(epoch)
        images = torch.cat([b.images for b in train.epoch(epoch)])
        assert torch.equal(images, seen[order * cache.views + views[order]])
        # Not the unmixed view: the partner is in the pixels.
        assert not torch.equal(images, render(pixels(store.images, train.rows[order], CPU),
                                              cache.aug_params.take(order, views[order])[:, :5], 32))


def test_cached_kd_loss_equals_online_kd_loss_on_the_same_records(tiny_data, recipe_cache):
    store, cache = ImageStore(tiny_data["store"]), TeacherCache(recipe_cache)
    teacher = teacher_net(tiny_data, len(store.classes))
    torch.manual_seed(0)
    student = models.create("resnet10t", len(store.classes))
    loss_fn = DistillationLoss(alpha=0.7, temperature=4, beta=0.5, label_smoothing=0.1,
                               student_dim=student.num_features, teacher_dim=cache.eval_features.shape[1])
    train = TrainLoader(store, 32, 8, seed=0, cache=cache, recipe=RECIPE)
    order, views = train.draw(0)
    start = 0
    for batch in train.epoch(0):
        pos = order[start:start + len(batch.labels)]
        start += len(pos)
        records = cache.aug_params.take(pos, views[pos])
        with torch.no_grad():
            logits, features = student(batch.images)
            online_logits, online_features = teacher(batch.images)
            cached = loss_fn(logits, batch.labels, batch.teacher_logits, features, batch.teacher_features)
            online = loss_fn(logits, batch.labels, online_logits, features, online_features)
            # The control: the same records without their partners, as a cache of crop and flip would give.
            unmixed = teacher(render(pixels(store.images, train.rows[pos], CPU), records[:, :RECIPE.own], 32,
                                     recipe=dataclasses.replace(RECIPE, mixup=0.0, cutmix=0.0)))[0]
        assert torch.allclose(batch.teacher_logits.float(), online_logits, rtol=2e-3, atol=2e-3)
        assert torch.allclose(cached, online, rtol=1e-3, atol=1e-4)
        assert not torch.allclose(batch.teacher_logits.float(), unmixed, rtol=2e-3, atol=2e-3)


def test_records_are_drawn_alike_in_any_order_subset_and_process(tiny_data):
    store = ImageStore(tiny_data["store"])
    partners = Partners(store.rows("train"), store.images.shard_rows)
    keys = store.rows("train")
    records = random_views(3, keys, 4, 32, RECIPE, partners)
    assert records.shape == (len(keys), 4, RECIPE.width)
    shuffled = np.random.default_rng(0).permutation(len(keys))[:7]
    assert np.array_equal(random_views(3, keys[shuffled], 4, 32, RECIPE, partners), records[shuffled])
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        again = pool.submit(random_views, 3, keys, 4, 32, RECIPE, partners).result()
    assert np.array_equal(again, records)
    assert not np.array_equal(random_views(4, keys, 4, 32, RECIPE, partners), records)
    # Partners: another training image of the same store shard.
    mates = partner_rows(records.reshape(-1, RECIPE.width), RECIPE).reshape(len(keys), 4)
    assert np.isin(mates, keys).all() and (mates != keys[:, None]).all()
    assert (mates // 16 == keys[:, None] // 16).all()
    with pytest.raises(ValueError, match="partner rows below 16,777,216"):
        Partners(np.array([0, 1 << 24]), 16)


def test_an_image_renders_alike_in_any_batch(tiny_data):
    store = ImageStore(tiny_data["store"])
    keys = store.rows("train")
    records = random_views(5, keys, 1, 32, RECIPE, Partners(keys, store.images.shard_rows))[:, 0]
    read, image_of, partner_of = image_rows(keys, partner_rows(records, RECIPE))
    images = pixels(store.images, read, CPU)
    whole = render(images, records, 32, image_of, RECIPE, partner_of)
    for i in (0, 7, len(keys) - 1):
        one = render(images, records[i:i + 1], 32, image_of[i:i + 1], RECIPE, partner_of[i:i + 1])
        assert torch.equal(one[0], whole[i])


@pytest.mark.parametrize("order", ["random", "shards"])
def test_fresh_records_are_the_same_in_either_order_from_memory_or_disk(tiny_data, order):
    """Baseline and online draw fresh records per image and epoch: a window of the shards
    order holds every partner (partners share the image's shard)."""
    expected = served(loader(tiny_data["store"], None, 1 << 40, "random", recipe=RECIPE), 0)
    assert_same(served(loader(tiny_data["store"], None, 0, order, recipe=RECIPE, read_processes=2), 0), expected)


def test_mixed_labels_sum_to_one_and_weigh_the_partners_share_of_the_pixels(tiny_data):
    store = ImageStore(tiny_data["store"])
    train = TrainLoader(store, 32, 100, seed=0, recipe=RECIPE)
    batch = next(train.epoch(0))
    assert batch.labels.shape == (len(train.rows), len(store.classes))
    assert torch.allclose(batch.labels.sum(1), torch.ones(len(train.rows)), atol=1e-6)
    # The partner's weight is what the pixels show: the share of them that are its view's.
    keys = store.rows("train")
    records = random_views(0, keys, 1, 32, RECIPE, Partners(keys, store.images.shard_rows))[:, 0]
    read, image_of, partner_of = image_rows(keys, partner_rows(records, RECIPE))
    images = pixels(store.images, read, CPU)
    mixed = render(images, records, 32, image_of, RECIPE, partner_of)
    own = render(images, records[:, :RECIPE.own], 32, image_of, dataclasses.replace(RECIPE, mixup=0, cutmix=0))
    weight = partner_weight(records, RECIPE, 32)
    cut = records[:, 2 * RECIPE.own + 1] == 1
    from_partner = (mixed != own).any(1).float().mean((1, 2)).numpy()
    assert cut.any() and (~cut).any()
    assert np.allclose(from_partner[cut], weight[cut], atol=0.05)  # pixels equal by chance are few
    assert np.allclose(weight[~cut], records[~cut, 2 * RECIPE.own + 1])  # mixup: the blend, everywhere
    assert RECIPE.width == 2 * (5 + 4) + MIX


def test_a_cache_drawn_for_another_recipe_is_refused(tiny_data, recipe_cache):
    store = ImageStore(tiny_data["store"])
    with pytest.raises(ValueError, match="holds views drawn by Recipe"):
        TrainLoader(store, 32, 8, seed=0, cache=TeacherCache(recipe_cache))
    with pytest.raises(ValueError, match="use a cache made for this recipe"):
        TrainLoader(store, 32, 8, seed=0, cache=TeacherCache(tiny_data["cache"]), recipe=RECIPE)


def test_each_operation_changes_an_image_on_its_own_and_magnitude_zero_changes_none():
    images = torch.rand(len(randaugment.NAMES), 3, 16, 16)
    ops = np.array([[k, 0.9] for k in range(len(randaugment.NAMES))], np.float32)
    out = randaugment.apply(images.clone(), ops)
    changed = [not torch.allclose(a, b, atol=1e-3) for a, b in zip(out, images)]
    assert changed == [name != "identity" for name in randaugment.NAMES]
    for i in range(len(images)):  # alone, the same
        assert torch.equal(randaugment.apply(images[i:i + 1].clone(), ops[i:i + 1])[0], out[i])
    # Those with a strength (posterize's least is 8 bits, still a rounding of float pixels).
    strengths = [k for k, name in enumerate(randaugment.NAMES) if name not in ("autocontrast", "equalize", "posterize")]
    still = randaugment.apply(images[strengths].clone(), np.array([[k, 0.0] for k in strengths], np.float32))
    assert torch.allclose(still, images[strengths], atol=1e-5)


def test_label_smoothing_smooths_indices_and_distributions():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    loss = DistillationLoss(alpha=0, label_smoothing=0.1)
    assert torch.allclose(loss(logits, labels), F.cross_entropy(logits, labels, label_smoothing=0.1))
    soft = torch.softmax(torch.randn(6, 5), 1)
    by_hand = -((0.9 * soft + 0.1 / 5) * logits.log_softmax(1)).sum(1).mean()
    assert torch.allclose(loss(logits, soft), by_hand)


def test_the_recipe_enters_fingerprints_only_when_on(luigi_config):
    fields = fingerprint_fields(train_settings())
    assert "recipe" not in fields and "label_smoothing" not in fields
    cache, teacher = CacheTeacher("demo").fingerprint(), FineTuneTeacher("demo").fingerprint()
    student = TrainStudent("demo", "vit", "baseline").fingerprint()
    luigi_config("train", "randaugment", "2,9")
    assert CacheTeacher("demo").pass_settings()["recipe"]["randaugment"] == [2, 9]
    assert CacheTeacher("demo").fingerprint() != cache
    assert TrainStudent("demo", "vit", "baseline").fingerprint() != student
    assert FineTuneTeacher("demo").fingerprint() == teacher  # its own recipe keys are still off
    luigi_config("teacher", "label_smoothing", "0.1")
    assert FineTuneTeacher("demo").fingerprint() != teacher


@pytest.mark.slow
def test_an_experiment_with_the_recipe_runs_end_to_end(luigi_config):
    for section in ("train", "teacher"):
        luigi_config(section, "randaugment", "2,5")
        luigi_config(section, "mixup", "0.8")
        luigi_config(section, "cutmix", "1.0")
        luigi_config(section, "label_smoothing", "0.1")
    luigi_config("data", "shuffle_rows", "true")
    luigi_config("train", "modes", "baseline,kd,online")
    ok, ran = build(RunAll())
    assert ok
    cache = TeacherCache(CacheTeacher("demo").cache_path())
    assert cache.attrs["recipe"]["mixup"] == 0.8 and cache.aug_params.shape[-1] == Recipe((2, 5), 0.8, 1.0).width

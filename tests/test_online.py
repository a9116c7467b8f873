"""Online distillation, the reference the cache is judged against: the teacher runs on
every batch on the student's own fresh views, and the cache is never read."""
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F
from support.build import build
from support.config import TEACHER, TINY_VIT

import models
from cache import reader
from pipeline.data.imagestore import ImageStore
from pipeline.spec import parse_spec
from pipeline.training import train
from pipeline.training.build import Distill, TrainSetup, build_run
from pipeline.training.loader import TrainLoader
from pipeline.training.losses import DistillationLoss
from pipeline.training.train import fit
from tasks import TrainStudent
from tasks.config import train_settings
from tasks.teacher import CacheTeacher

SETTINGS = train_settings(epochs=1, batch_size=16, image_size=32, seed=0)
DISTILL = Distill(alpha=0.7, temperature=4.0, beta=0.0, feature_loss="mse", hard=False)


def teacher_net(tiny_data, classes):
    return models.load_weights(models.create(TEACHER, classes), tiny_data["weights"])


@pytest.mark.slow
def test_first_batch_loss_is_the_kd_loss_with_the_teacher_on_the_same_views(tiny_data, tmp_path, monkeypatch):
    store = ImageStore(tiny_data["store"])
    losses = []
    epoch = train.train_epoch
    monkeypatch.setattr(train, "train_epoch", lambda *a, **kw: losses.extend(epoch(*a, **kw)) or losses)
    name, kwargs = parse_spec(TINY_VIT)
    setup = TrainSetup(model=name, kwargs=kwargs, settings=SETTINGS, distill=DISTILL)
    fit(build_run(setup, store, teacher=teacher_net(tiny_data, len(store.classes))), tmp_path)

    # The same first step, by hand: the seeded student, the loader's first batch of fresh
    # views, the teacher run on exactly those images, kd's loss.
    torch.manual_seed(SETTINGS.seed)
    student = models.create(name, len(store.classes), **kwargs).train()
    batch = next(TrainLoader(store, 32, 16, SETTINGS.seed, augment=True).epoch(0))
    with torch.no_grad():
        teacher_logits, teacher_features = teacher_net(tiny_data, len(store.classes)).eval()(batch.images)
        logits, features = student(batch.images)
        expected = DistillationLoss(**asdict(DISTILL))(logits, batch.labels, teacher_logits, features, teacher_features)
        labels_only = F.cross_entropy(logits, batch.labels)
    assert losses[0] == pytest.approx(expected.item(), rel=1e-5)
    assert abs(losses[0] - labels_only.item()) > 1e-3  # the teacher's term is in it


def test_a_cache_and_an_online_teacher_together_are_refused(tiny_data, tmp_path):
    store = ImageStore(tiny_data["store"])
    name, kwargs = parse_spec(TINY_VIT)
    setup = TrainSetup(model=name, kwargs=kwargs, settings=SETTINGS, distill=DISTILL)
    with pytest.raises(ValueError, match="not both"):
        build_run(setup, store, reader.TeacherCache(tiny_data["cache"]), teacher_net(tiny_data, len(store.classes)))


@pytest.mark.slow
def test_online_student_trains_without_ever_reading_a_cache(luigi_config, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an online student read the teacher cache")

    monkeypatch.setattr(reader.TeacherCache, "__init__", refuse)
    ok, ran = build(TrainStudent("demo", "vit", "online"))
    assert ok
    assert sorted(type(t).__name__ for t in ran) == ["FineTuneTeacher", "PrepareDataset", "TrainStudent"]
    assert not CacheTeacher("demo").folder().exists()
    student = ran[-1]
    assert student.output().exists() and (student.folder() / "history.json").exists()
    assert student.folder().name.startswith("student-vit-online-")

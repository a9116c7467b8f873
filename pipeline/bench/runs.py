"""Students' training runs as the cache-vs-online benchmark times them: its settings
(Settings, with each one's help), what its measurements share (Bench: the store, the
teacher and its cache) and one student's run, an epoch at a time (StudentRun)."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

import models
from cache.reader import TeacherCache
from pipeline.bench.harness import seconds
from pipeline.data.imagestore import ImageStore
from pipeline.runtime.device import Precision, resolve_device, resolve_precision
from pipeline.spec import parse_randaugment, parse_spec
from pipeline.teacher.teacher_pass import TeacherJob, cache_teacher
from pipeline.training.build import Distill, TrainSetup, build_run
from pipeline.training.loader import Batch, TrainLoader
from pipeline.training.settings import TrainSettings
from pipeline.training.train import epoch_losses, step_loss, train_epoch
from pipeline.views.records import Recipe

STUDENTS = ("vit_tiny_patch16_224 img_size=64 patch_size=8 embed_dim=96 depth=4 num_heads=3",
            "pvt_v2_b0 depths=(1,1,2,1)",
            "convit_tiny img_size=64 patch_size=8 embed_dim=32 depth=4 num_heads=3 local_up_to_layer=2")


@dataclass(frozen=True)
class Settings:
    """The cache-vs-online benchmark's settings, each a flag of `python -m pipeline.bench`
    (HELP says what each does); StudentRun reads them too."""
    # the data set, made on the spot
    per_class: int = 32
    image_size: int = 64
    shard_rows: int = 256
    seed: int = 0
    # the teacher and its pass
    teacher: str = "convnext_atto"
    views: int = 8
    teacher_batch_size: int = 256
    # the students and their training
    students: tuple[str, ...] = STUDENTS
    epochs: int = 8
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    alpha: float = 0.7
    temperature: float = 4.0
    # the recipe of random views
    randaugment: str = ""
    mixup: float = 0.0
    cutmix: float = 0.0
    # where and how often everything runs
    device: str = "auto"
    precision: str = "auto"
    threads: int = os.cpu_count() or 1
    reps: int = 3

    def recipe(self) -> Recipe:
        """How random views are drawn, for the teacher pass and every student alike."""
        return Recipe(parse_randaugment(self.randaugment), self.mixup, self.cutmix)

    def on(self) -> tuple[torch.device, Precision]:
        """The device and precision every model runs in."""
        return resolve_device(self.device), resolve_precision(self.precision, self.device)


# What each setting does, as `--help` tells it.
HELP = {"per_class": "training images per class (8 classes), plus a quarter as many test images",
        "image_size": "side of the stored images and of the model input",
        "batch_size": "training batch size (students, online teacher)",
        "teacher_batch_size": "teacher-pass batch size (the pipeline uses 4x the training one)",
        "views": "random views cached per training image",
        "teacher": "teacher spec: timm name and key=value kwargs (random init)",
        "students": "student specs; the first is used for the single-student metrics",
        "reps": "repetitions of each interleaved measurement",
        "threads": "torch threads, everywhere",
        "epochs": "epochs of each run in students_from_one_pass",
        "shard_rows": "store and cache rows per shard",
        "lr": "students' peak learning rate", "weight_decay": "students' AdamW weight decay",
        "warmup_epochs": "epochs of learning-rate warm-up",
        "alpha": "weight of the distillation term", "temperature": "distillation temperature",
        "seed": "seed of data, views and initialisations",
        "device": "where every model runs: auto, cpu, cuda, cuda:N or mps (as [compute] device)",
        "precision": "auto, fp32, bf16 or fp16 (as [compute] precision); bf16_speedup compares "
                     "fp32 and bf16 regardless",
        "randaugment": "N,M: the recipe's RandAugment (as [train] randaugment); empty = none",
        "mixup": "the recipe's mixup alpha (as [train] mixup)", "cutmix": "the recipe's cutmix alpha"}


@dataclass(frozen=True)
class Bench:
    """What the measurements share; picklable, for the fresh processes of the memory probe."""
    s: Settings
    store: Path
    weights: Path
    cache: Path
    classes: int
    teacher_dim: int

    def teacher(self) -> torch.nn.Module:
        """The teacher from its saved weights, in eval mode on the settings' device."""
        name, kwargs = parse_spec(self.s.teacher)
        net = models.load_weights(models.create(name, self.classes, **kwargs), self.weights)
        return net.eval().to(self.s.on()[0])

    def teacher_pass(self) -> float:
        """Seconds for cache_teacher into a fresh cache, as tasks.CacheTeacher runs it."""
        shutil.rmtree(self.cache, ignore_errors=True)
        return seconds(self._teacher_pass)

    def _teacher_pass(self) -> None:
        s, store = self.s, ImageStore(self.store, budget=0)
        name, kwargs = parse_spec(s.teacher)
        job = TeacherJob(store=str(self.store), out=str(self.cache), model=name, kwargs_json=json.dumps(kwargs),
                         weights=str(self.weights), classes=self.classes, image_size=s.image_size, views=s.views,
                         seed=s.seed, batch_size=s.teacher_batch_size, threads=s.threads, device=s.device,
                         precision=s.on()[1].name, recipe=s.recipe())
        identity = {"teacher": s.teacher, "image_size": s.image_size, "views": s.views, "seed": s.seed}
        cache_teacher(job, store.rows("train"), len(store.labels), self.teacher_dim,
                      {"identity": identity, "classes": store.classes}, shard_rows=s.shard_rows)

    def counts(self) -> tuple[int, int]:
        """(images, training images) in the store."""
        store = ImageStore(self.store, budget=0)
        return len(store.labels), len(store.rows("train"))


class StudentRun:
    """A student's training run, an epoch at a time, in one of three modes: baseline
    (labels only), kd (from the teacher cache) or online (timm's LogitDistillationTask,
    running the teacher on every batch). All three are built by the tasks' builder
    (pipeline.training.build) and step through pipeline.training.train.train_epoch."""

    def __init__(self, s: Settings, spec: str, store: ImageStore, mode: str, epochs: int,
                 cache: TeacherCache | None = None, teacher: torch.nn.Module | None = None):
        self.run = build_run(StudentRun.setup(s, spec, mode, epochs), store, cache, device=s.on()[0])
        if mode == "online":
            net = self.run.net
            task = models.timm_distillation(net, teacher, s.alpha, s.temperature)
            task.to(self.run.device)  # its buffers start on the CPU
            # timm's task takes inputs normalised for the student, as a Net normalises them.
            # Its loss is computed inside, so under autocast too (autocast keeps it float32).
            def online_loss(batch: Batch) -> torch.Tensor:
                with self.run.autocast():
                    return task((batch.images - net.mean) / net.std, batch.labels)["loss"].float()
            self.loss_of, self.module = online_loss, task  # the optimizer's parameters are its trainable_module's
        else:
            self.loss_of, self.module = step_loss(self.run), self.run.net
        self.done = 0

    @property
    def loader(self) -> TrainLoader:
        """The run's loader, which the measurements also time alone."""
        return self.run.loader

    @staticmethod
    def setup(s: Settings, spec: str, mode: str, epochs: int) -> TrainSetup:
        """The student `spec` trained `epochs` epochs in `mode` as the settings say, set up as
        a task sets up its job; kd and online distill by the settings' alpha and temperature."""
        name, kwargs = parse_spec(spec)
        settings = TrainSettings(epochs=epochs, batch_size=s.batch_size, lr=s.lr, weight_decay=s.weight_decay,
                                 warmup_epochs=s.warmup_epochs, image_size=s.image_size, seed=s.seed, augment=True,
                                 order="random", order_window=1, recipe=s.recipe(), label_smoothing=0.0)
        distill = None if mode == "baseline" else Distill(s.alpha, s.temperature, beta=0.0, feature_loss="mse",
                                                          hard=False)
        return TrainSetup(model=name, kwargs=kwargs, settings=settings, distill=distill, precision=s.on()[1].name)

    def epoch(self) -> float:
        """Seconds for the next epoch."""
        epoch = self.done
        self.done += 1
        self.module.train()
        return seconds(lambda: epoch_losses(self.run, self.loss_of, epoch))

    def steps(self, batch: Batch, count: int) -> float:
        """Seconds per training step on one in-memory batch: the student's cost alone."""
        self.module.train()
        return seconds(lambda: train_epoch(self.loss_of, self.run.opt, [batch] * count,
                                           lambda i: self.run.settings.lr, self.run.scaler)) / count

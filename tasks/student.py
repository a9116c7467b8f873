"""Students: training (labels only, distilling from the cache, or from the teacher run
online) and evaluation."""
from __future__ import annotations

from pathlib import Path

import luigi

import models
from cache.files import atomic_write_json
from cache.reader import TeacherCache
from pipeline.data.imagestore import ImageStore
from pipeline.evaluation.metrics import classification_metrics
from pipeline.inference import predict_rows
from pipeline.spec import parse_spec
from pipeline.training.train import MODES, TrainSettings, fit
from tasks.base import Evaluation, Step, memory_budget
from tasks.config import compute, kd, students, teacher, train, train_settings
from tasks.data import PrepareDataset
from tasks.teacher import CacheTeacher, teacher_weights


def student_spec(student: str) -> str:
    specs = students()
    if student not in specs:
        raise ValueError(f"student {student!r} is not in luigi.cfg's [students] section "
                         f"(it has: {', '.join(specs) or 'nothing'})")
    return specs[student]


class StudentStep(Step):
    student = luigi.Parameter(description="a name from luigi.cfg's [students] section")
    mode = luigi.ChoiceParameter(choices=MODES)
    views = luigi.OptionalIntParameter(default=None, description="mode kd: the cache's views; None = [teacher] views")

    def folder(self) -> Path:
        views = "" if self.views is None else f"-v{self.views}"
        return super().folder().with_name(f"{self.kind}-{self.student}-{self.mode}{views}-{self.fingerprint()[:12]}")


class TrainStudent(StudentStep):
    """Train one student: on labels alone (baseline), distilling from the teacher cache and
    never building the teacher (kd), or distilling from the teacher run on every batch
    on the student's own fresh views, never reading the cache (online)."""

    kind = "student"
    resources = {"train": 1}
    on_device = True

    def requires(self):
        reqs = {"store": PrepareDataset(self.dataset)}
        if self.mode == "kd":
            reqs["cache"] = CacheTeacher(self.dataset, self.views)
        if self.mode == "online":
            reqs["teacher"] = teacher_weights(self.dataset)
        return reqs

    def settings(self) -> dict:
        k = kd()
        distill = {"alpha": k.alpha, "temperature": k.temperature, "beta": k.beta,
                   "feature_loss": k.feature_loss, "hard": k.hard}
        settings = {"student": student_spec(self.student), "train": vars(self.train_settings()),
                    "distill": None if self.mode == "baseline" else distill, "precision": self.precision().name}
        if self.mode == "online":
            settings["teacher"] = teacher().model
        return settings

    def train_settings(self) -> TrainSettings:
        return train_settings()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(self.folder() / f"{self.student}-{self.mode}.safetensors")

    def work(self) -> None:
        self.use_threads()
        self.write_settings()
        store = ImageStore(self.requires()["store"].store_path(), memory_budget())
        cache = online = None
        if self.mode == "kd":
            cache = TeacherCache(self.requires()["cache"].cache_path(), memory_budget())
            cache.check(self.requires()["cache"].identity())
        if self.mode == "online":
            name, kwargs = parse_spec(teacher().model)
            online = models.load_weights(models.create(name, len(store.classes), **kwargs),
                                         self.input()["teacher"].path)
        name, kwargs = parse_spec(student_spec(self.student))
        settings = self.train_settings()
        progress = self.progress(settings.epochs, "epochs", every=0)
        net, history = fit(name, kwargs, store, settings, self.folder(), cache=cache,
                           distill=self.settings()["distill"], progress=progress, device=self.device(),
                           precision=self.precision(), compile=compute().compile, teacher=online)
        progress.close()
        atomic_write_json(self.folder() / "history.json", history, indent=1)
        models.save_weights(net, self.output().path)


class EvaluateStudent(Evaluation, StudentStep):
    """Test metrics and logits of a trained student, and its agreement with the teacher."""

    kind = "student-eval"
    on_device = True

    def requires(self):
        return {"store": PrepareDataset(self.dataset), "cache": CacheTeacher(self.dataset),
                "model": TrainStudent(self.dataset, self.student, self.mode, self.views)}

    def work(self) -> None:
        self.use_threads()
        store = ImageStore(self.requires()["store"].store_path(), budget=0)
        cache = TeacherCache(self.requires()["cache"].cache_path(), budget=0)
        name, kwargs = parse_spec(student_spec(self.student))
        net = models.load_weights(models.create(name, len(store.classes), **kwargs),
                                  self.input()["model"].path).to(self.device())
        rows = store.rows("test")
        logits, _ = predict_rows(net, store, rows, train().image_size, precision=self.precision())
        metrics = classification_metrics(logits, store.labels[rows], cache.eval_logits[rows])
        metrics.update(model=name, params=sum(p.numel() for p in net.parameters()),
                       mode=self.mode, student=self.student)
        self.save(metrics, logits)

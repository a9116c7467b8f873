"""Students: training (labels only, distilling from the cache, or from the teacher run
online) and evaluation."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import luigi

import models
from cache.reader import TeacherCache
from pipeline.data.imagestore import ImageStore
from pipeline.evaluation.metrics import classification_metrics
from pipeline.inference import predict_rows
from pipeline.spec import MODES, parse_spec
from pipeline.training.build import Distill, TrainSetup
from pipeline.training.job import OnlineTeacher, TrainJob
from pipeline.training.settings import TrainSettings, fingerprint_fields
from tasks.base import Evaluation, FingerprintedTask, Training, memory_budget
from tasks.config import kd, students, teacher, train, train_settings
from tasks.data import PrepareDataset, train_order
from tasks.teacher import CacheTeacher, teacher_weights


def student_spec(student: str) -> str:
    specs = students()
    if student not in specs:
        raise ValueError(f"student {student!r} is not in luigi.cfg's [students] section "
                         f"(it has: {', '.join(specs) or 'nothing'})")
    return specs[student]


class StudentStep(FingerprintedTask):
    student = luigi.Parameter(description="a name from luigi.cfg's [students] section")
    mode = luigi.ChoiceParameter(choices=MODES)
    variant = luigi.Parameter(default="", description="mode kd: the cache's settings where they differ from "
                                                      "[teacher]'s, e.g. 'topk=5' (CacheTeacher)")

    def folder(self) -> Path:
        variant = "".join(f"-{pair.replace('=', '')}" for pair in self.variant.split())
        return super().folder().with_name(f"{self.kind}-{self.student}-{self.mode}{variant}-{self.fingerprint()[:12]}")


class TrainStudent(Training, StudentStep):
    """Train one student: on labels alone (baseline), distilling from the teacher cache and
    never building the teacher (kd), or distilling from the teacher run on every batch
    on the student's own fresh views, never reading the cache (online)."""

    kind = "student"

    def requires(self):
        reqs = {"store": PrepareDataset(self.dataset)}
        if self.mode == "kd":
            reqs["cache"] = CacheTeacher(self.dataset, self.variant)
        if self.mode == "online":
            reqs["teacher"] = teacher_weights(self.dataset)
        return reqs

    def distill(self) -> Distill | None:
        """[kd] as the loss's terms; None for a baseline."""
        if self.mode == "baseline":
            return None
        kd_cfg = kd()
        return Distill(kd_cfg.alpha, kd_cfg.temperature, kd_cfg.beta, kd_cfg.feature_loss, kd_cfg.hard)

    def reads_features(self) -> bool:
        """Its loss has a feature term: kd or online at [kd] beta > 0."""
        distill = self.distill()
        return distill is not None and distill.beta > 0

    def unread(self, requirement: FingerprintedTask) -> tuple[str, ...]:
        """Without a feature term, the cache's features and stage maps are never read."""
        return requirement.feature_settings() if isinstance(requirement, CacheTeacher) and not self.reads_features() \
            else ()

    def settings(self) -> dict:
        distill = self.distill()
        terms = None if distill is None else asdict(distill)
        if terms and not self.reads_features():
            del terms["feature_loss"]  # the loss of a term weighted 0 changes nothing
        settings = {"student": student_spec(self.student), "train": fingerprint_fields(self.train_settings()),
                    "distill": terms, "precision": self.precision().name}
        if self.mode == "online":
            settings["teacher"] = teacher().model
        return settings

    def train_settings(self) -> TrainSettings:
        return train_settings(order=train_order(self.dataset))

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(self.folder() / f"{self.student}-{self.mode}.safetensors")

    def work(self) -> None:
        self.use_threads()
        self.write_settings()
        cache = online = None
        if self.mode == "kd":
            cache = self.requires()["cache"].cache_path()
            TeacherCache(cache, budget=0).check(self.requires()["cache"].identity())  # before any rank starts
        if self.mode == "online":
            name, kwargs = parse_spec(teacher().model)
            online = OnlineTeacher(name, kwargs, self.input()["teacher"].path)
        name, kwargs = parse_spec(student_spec(self.student))
        settings = self.train_settings()
        setup = TrainSetup(model=name, kwargs=kwargs, settings=settings, distill=self.distill(),
                           **self.how_it_runs())
        job = TrainJob(setup, store=str(self.requires()["store"].store_path()), workdir=str(self.folder()),
                       weights=self.output().path, memory_budget=memory_budget(), cache=cache and str(cache),
                       teacher=online, device=str(self.device()))
        self.run_training(job, "epochs", settings.epochs)


class EvaluateStudent(Evaluation, StudentStep):
    """Test metrics and logits of a trained student, and its agreement with the teacher."""

    kind = "student-eval"
    on_device = True

    def unread(self, requirement: FingerprintedTask) -> tuple[str, ...]:
        """It compares with the cache's logits only."""
        return requirement.feature_settings() if isinstance(requirement, CacheTeacher) else ()

    def requires(self):
        return {"store": PrepareDataset(self.dataset), "cache": CacheTeacher(self.dataset),
                "model": TrainStudent(self.dataset, self.student, self.mode, self.variant)}

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

"""The teacher: its weights (fine-tuned here or given), its one pass into the cache,
and its evaluation from the cache alone."""
from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

import luigi
import torch

import models
from cache.reader import TeacherCache
from cache.schema import FORMAT_VERSION, LogitCoding
from cache.storage.blocks import Stopwatch
from cache.storage.files import atomic_write_json
from cache.storage.fingerprint import changed_settings, digest, file_sha256
from pipeline.data.imagestore import ImageStore
from pipeline.evaluation.metrics import classification_metrics
from pipeline.spec import CACHE_KEYS, cache_text, parse_cache, parse_spec, parse_stages
from pipeline.teacher.teacher_pass import TeacherJob, cache_teacher
from pipeline.training.build import INITS, TrainSetup
from pipeline.training.job import TrainJob
from pipeline.training.settings import TrainSettings, fingerprint_fields
from tasks.base import Evaluation, FingerprintedTask, Training, memory_budget, read_json
from tasks.check import ConfigCheckedTask
from tasks.config import compute, dask_scheduler, kd, recipe, study_caches, teacher, train, train_settings
from tasks.data import PrepareDataset, train_order


class TeacherCheckpoint(ConfigCheckedTask, luigi.ExternalTask):
    """A finished teacher named by luigi.cfg's [teacher] checkpoint; identified by its content."""

    dataset = luigi.Parameter()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(teacher().checkpoint)

    def fingerprint(self, unread: Collection[str] = ()) -> str:
        """Its content's: it has no settings to leave out (FingerprintedTask.fingerprint)."""
        path = Path(teacher().checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"[teacher] checkpoint = {path}: no such file")
        return file_sha256(path)


class FineTuneTeacher(Training):
    """Train the ConvNeXt teacher on the train split, from scratch, timm's pretrained
    weights or a local weights file ([teacher] init)."""

    kind = "teacher"
    resources = {"teacher": 1, "train": 1}

    def requires(self):
        return PrepareDataset(self.dataset)

    def settings(self) -> dict:
        teacher_cfg = teacher()
        init = teacher_cfg.init if teacher_cfg.init in INITS else file_sha256(teacher_cfg.init)
        return {"model": teacher_cfg.model, "init": init, "settings": fingerprint_fields(self.train_settings()),
                "precision": self.precision().name}

    def train_settings(self) -> TrainSettings:
        teacher_cfg = teacher()
        return train_settings(teacher_cfg, epochs=teacher_cfg.epochs, lr=teacher_cfg.lr, seed=teacher_cfg.seed,
                              order=train_order(self.dataset))

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(self.folder() / "weights.safetensors")

    def work(self) -> None:
        self.use_threads()
        self.write_settings()
        t = teacher()
        name, kwargs = parse_spec(t.model)
        settings = self.train_settings()
        setup = TrainSetup(model=name, kwargs=kwargs, settings=settings, init=t.init, **self.how_it_runs())
        job = TrainJob(setup, store=str(self.requires().store_path()), workdir=str(self.folder()),
                       weights=self.output().path, memory_budget=memory_budget(), device=str(self.device()))
        self.run_training(job, "teacher fine-tuning, epochs", settings.epochs)


def teacher_weights(dataset: str) -> luigi.Task:
    return TeacherCheckpoint(dataset) if teacher().checkpoint else FineTuneTeacher(dataset)


class CacheTeacher(FingerprintedTask):
    """Run the teacher once over the data set: eval view of every image and [teacher]
    views random views of every training image, logits and features, into Zarr; encoded
    as [teacher] topk and feature_dtype say, or as `variant` says where it differs."""

    kind = "cache"
    resources = {"teacher": 1}
    on_device = True
    variant = luigi.Parameter(default="", description="the cache's settings where they differ from [teacher]'s, "
                                                      "e.g. 'topk=5 views=32' (cache_variant)")

    def cache_settings(self) -> dict:
        """The [teacher] keys of this cache (cache_settings)."""
        return cache_settings(self.variant)

    def coding(self) -> LogitCoding:
        """How this cache keeps its logits (logit_dtype auto: by the data set's classes)."""
        return logit_coding(self.cache_settings(), len(self.requires()["store"].source.classes))

    def gpu_count(self) -> int:
        # With [compute] scheduler = gpus, one dask worker process per GPU runs the pass.
        return len(self.gpus()) if compute().scheduler == "gpus" else super().gpu_count()

    @contextmanager
    def device_held(self) -> Iterator[None]:
        if compute().scheduler == "gpus":  # its dask workers hold the GPUs, one each
            yield
            return
        with super().device_held():
            yield

    def requires(self):
        return {"store": PrepareDataset(self.dataset), "teacher": teacher_weights(self.dataset)}

    def pass_settings(self) -> dict:
        """How the pass sees and records the images: the part of settings() that identity()
        repeats, written once."""
        c = self.cache_settings()
        return {"image_size": train().image_size, "views": c["views"], "topk": c["topk"],
                "feature_dtype": c["feature_dtype"], **self.coding().identity(), "seed": teacher().seed,
                "stages": list(cached_stages()), "format_version": FORMAT_VERSION,
                **recipe(train()).fingerprint_fields()}

    def settings(self) -> dict:
        return {"model": teacher().model, **self.pass_settings(), "precision": self.precision().name}

    def identity(self) -> dict:
        """What the cache records as its `identity` and a student checks it against before it
        trusts it: the pass's settings with the actual store and teacher weights in place of
        their names."""
        name, kwargs = parse_spec(teacher().model)
        weights = self.input()["teacher"].path
        return {"store": self.requires()["store"].fingerprint(), "teacher": name,
                "teacher_kwargs": digest(kwargs), "teacher_sha256": file_sha256(weights), **self.pass_settings()}

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(self.folder() / "cache.zarr" / "manifest.json")

    def work(self) -> None:
        self.use_threads()
        self.write_settings()
        c = compute()
        store = ImageStore(self.requires()["store"].store_path(), budget=0)
        name, kwargs = parse_spec(teacher().model)
        net = models.create(name, len(store.classes), **kwargs)
        settings = self.cache_settings()
        job = TeacherJob(store=str(store.path), out=str(self.cache_path()), model=name,
                         kwargs_json=json.dumps(kwargs), weights=self.input()["teacher"].path,
                         classes=len(store.classes), image_size=train().image_size, views=settings["views"],
                         coding=self.coding(), feature_dtype=settings["feature_dtype"],
                         seed=teacher().seed, batch_size=train().batch_size * 4, threads=c.threads,
                         stages=cached_stages(), device=c.device, precision=self.precision().name,
                         compile=c.compile, recipe=recipe(train()))
        attrs = {"identity": self.identity(), "classes": store.classes,
                 "teacher_params": sum(p.numel() for p in net.parameters()),
                 "versions": {"torch": torch.__version__, **_versions()}}
        train_rows = store.rows("train")
        progress = self.progress(1, "teacher pass, shards")
        stopwatch = Stopwatch(self.cache_path())  # counts on from what stopped runs of this pass recorded
        with dask_scheduler(self.gpus()) as scheduler:
            cache_teacher(job, train_rows, len(store.labels), net.num_features, attrs, scheduler, c.workers,
                          c.shard_rows, progress, net.stage_shapes(job.stages, job.image_size), stopwatch)
        progress.close()
        # The pass's one-off cost, for the report: the seconds of every run that finished blocks.
        atomic_write_json(self.folder() / "pass.json",
                          {"seconds": round(stopwatch.seconds(), 2),
                           "forwards": len(store.labels) + job.views * len(train_rows)})

    def cache_path(self) -> Path:
        return self.folder() / "cache.zarr"

    def feature_settings(self) -> tuple[str, ...]:
        """The settings only its features and stage maps depend on, not its logits: a reader
        of the logits alone leaves them out of its fingerprint (FingerprintedTask.unread).
        Logits from the features depend on how the features are kept."""
        return ("stages",) if self.coding().from_features else ("feature_dtype", "stages")

    def cost(self) -> dict:
        """The pass's one-off cost, {"seconds", "forwards"}, or {} for a cache without it."""
        return read_json(self.folder() / "pass.json", {})


def cache_settings(variant: str = "") -> dict:
    """The cache keys of [teacher] (spec.CACHE_KEYS), with those `variant` gives in their
    place; feature_dtype auto resolved: float16 where [kd] beta > 0, stage maps are cached
    or the logits come from the features (logit_dtype = head), else none (nothing would read them)."""
    teacher_cfg = teacher()
    settings = {key: getattr(teacher_cfg, key) for key in CACHE_KEYS} | parse_cache(variant)
    if settings["feature_dtype"] == "auto":
        read = kd().beta > 0 or teacher_cfg.stages.strip() or logit_coding(settings).from_features
        settings["feature_dtype"] = "float16" if read else "none"
    return settings


def logit_coding(settings: dict, classes: int | None = None) -> LogitCoding:
    """How a cache of these settings keeps its logits for a data set of `classes`; a tempered
    or sampled tail at [kd] temperature."""
    return LogitCoding.of(settings, kd().temperature, classes)


def cache_variant(settings: dict) -> str:
    """The variant parameter naming a cache of these settings: only where they differ from
    [teacher]'s, so that a study's cache equal to the main one is the main one."""
    return cache_text(changed_settings(settings, cache_settings()))


def study_variants() -> list[str]:
    """The variants of the [cache_study] caches, the main cache's ("") first, the reference of
    every gain, each once (a listed cache equal to the main one is it); none without a study."""
    caches = study_caches()
    return list(dict.fromkeys(["", *(cache_variant({**cache_settings(), **c}) for c in caches)])) if caches else []


def cached_stages() -> tuple[int, ...]:
    """[teacher] stages as sorted stage indices: "" -> (), "2, 1" -> (1, 2)."""
    try:
        return parse_stages(teacher().stages)
    except ValueError as error:
        raise ValueError(f"[teacher] {error}") from None


def _versions() -> dict:
    import zarr
    return {"timm": models.timm_version(), "zarr": zarr.__version__}


class EvaluateTeacher(Evaluation):
    """The teacher's test metrics and logits, from the cache's eval view alone."""

    kind = "teacher-eval"

    def requires(self):
        return {"store": PrepareDataset(self.dataset), "cache": CacheTeacher(self.dataset)}

    def work(self) -> None:
        store = ImageStore(self.requires()["store"].store_path(), budget=0)
        cache = TeacherCache(self.requires()["cache"].cache_path())
        rows = store.rows("test")
        logits = cache.eval_logits[rows]
        metrics = classification_metrics(logits, store.labels[rows])
        metrics.update(model=cache.identity["teacher"], params=cache.attrs["teacher_params"])
        self.save(metrics, logits)

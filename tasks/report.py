"""Report: the paper's table for one data set, with paired-bootstrap intervals on every
gain, each run's seconds and the views study. RunAll: every data set, student and mode."""
from __future__ import annotations

from pathlib import Path

import luigi
import numpy as np

from pipeline.data.imagestore import ImageStore
from pipeline.evaluation.report import write_report
from pipeline.runtime.tensorboard import write_hparams
from pipeline.spec import parse_names
from tasks.base import FingerprintedTask, read_json
from tasks.check import ConfigCheckedTask
from tasks.config import RecipeKeys, cache_study, datasets, kd, modes, recipe, students, teacher, train
from tasks.data import PrepareDataset, train_order
from tasks.student import EvaluateStudent
from tasks.teacher import CacheTeacher, EvaluateTeacher, study_variants, teacher_weights


class Report(FingerprintedTask):
    """Markdown + CSV + PNGs: the teacher and its one-off cost, then each student in every
    mode with the gains and their 95% intervals, and the cache study when configured."""

    kind = "report"

    def requires(self):
        ds, study = self.dataset, parse_names(cache_study().students)
        return {"teacher": EvaluateTeacher(ds), "weights": teacher_weights(ds), "cache": CacheTeacher(ds),
                "students": {s: {m: EvaluateStudent(ds, s, m) for m in modes()} for s in students()},
                "study": {v: {"cache": CacheTeacher(ds, v),
                              "students": {s: EvaluateStudent(ds, s, "kd", v) for s in study}}
                          for v in study_variants()}}

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(self.folder() / "report.md")

    def work(self) -> None:
        reqs = self.requires()
        store = ImageStore(reqs["teacher"].requires()["store"].store_path(), budget=0)
        rows = [student_results(name, {mode: run_results(task) for mode, task in by_mode.items()})
                for name, by_mode in reqs["students"].items()]
        study = [cache_results(c, len(store.labels)) for c in reqs["study"].values()]
        k, s = kd(), train()
        notes = [
            f"Test split of `{self.dataset}`; {s.epochs} epochs, batch {s.batch_size}, {s.image_size} px, "
            f"seed {s.seed}.",
            f"kd: alpha {k.alpha}, T {k.temperature}, beta {k.beta} ({k.feature_loss}), hard {k.hard}; teacher "
            f"targets from the cache: {cache_description(reqs['cache'])}.",
        ]
        notes += run_settings_notes(self.dataset)
        if "online" in modes():
            notes.append("online: the same loss with the teacher run on every batch, on the student's own fresh "
                         "random views (the reference the cache is judged against).")
        teacher_row = self.teacher_results()
        path = write_report(self.folder(), f"{self.dataset}: students without and with distillation", notes,
                            teacher_row, store.labels[store.rows("test")], rows, study)
        if train().logger == "tensorboard":
            write_hparams(self.folder(), hparam_runs(teacher_row, rows))
        print(f"report written to {path}")

    def teacher_results(self) -> dict:
        """The teacher's metrics, test logits and its one-off cost: fine-tuning (none for a
        given checkpoint) and the cache pass."""
        results = evaluation(self.input()["teacher"])
        metrics = results["metrics"]
        history = read_json(Path(self.input()["weights"].path).parent / "history.json", [])
        cost = self.requires()["cache"].cost()
        return {"name": "teacher", "model": metrics["model"], "params": metrics["params"], **results,
                "fit_seconds": training_seconds(history), "pass_seconds": cost.get("seconds"),
                "forwards": cost.get("forwards"), "history": history}


def run_settings_notes(dataset: str) -> list[str]:
    """How the runs saw their images: the store's format and row order, the training order and
    the recipes (students and cache views; the teacher's fine-tuning)."""
    store, t = PrepareDataset(dataset).settings(), train()
    image_format = f"JPEG (quality {store['jpeg_quality']})" if store.get("image_format") == "jpeg" else "raw uint8"
    rows = "rows shuffled (seeded)" if store.get("shuffle_rows") else "rows in the source's order"
    order = train_order(dataset)
    order = f"shards, {t.order_window} at a time" if order == "shards" else order
    return [f"Image store: {image_format} at {store['size']} px, {rows}; each epoch's order: {order}.",
            f"Recipe of the students and of the cached views: {recipe_description(train())}; of the teacher's "
            f"fine-tuning: {recipe_description(teacher())}."]


def recipe_description(section: RecipeKeys) -> str:
    """'crop and flip only', or what a section's recipe keys add to them."""
    r = recipe(section)
    parts = [f"RandAugment {r.randaugment[0]} ops at magnitude {r.randaugment[1]}"] if r.randaugment[0] else []
    parts += [f"{name} alpha {alpha}" for name, alpha in (("mixup", r.mixup), ("cutmix", r.cutmix)) if alpha]
    if r.mixes:
        parts.append(f"mix_prob {r.mix_prob}, switch_prob {r.switch_prob}")
    if section.label_smoothing:
        parts.append(f"label smoothing {section.label_smoothing}")
    return "crop and flip, " + ", ".join(parts) if parts else "crop and flip only"


def hparam_runs(teacher: dict, students: list[dict]) -> dict[str, tuple[dict, dict]]:
    """The report's runs for TensorBoard's HParams table: name -> (who, test top-1 and mAP)."""
    def scores(metrics: dict) -> dict:
        return {key: metrics[key] for key in ("top1", "mAP")}
    runs = {"teacher": ({"student": "teacher", "model": teacher["model"], "mode": "teacher"},
                        scores(teacher["metrics"]))}
    for row in students:
        for mode, run in row["runs"].items():
            runs[f"{row['name']}-{mode}"] = ({"student": row["name"], "model": row["model"], "mode": mode},
                                             scores(run["metrics"]))
    return runs


def student_results(name: str, runs: dict) -> dict:
    first = next(iter(runs.values()))["metrics"]
    return {"name": name, "model": first["model"], "params": first["params"], "runs": runs}


def evaluation(targets: dict) -> dict:
    """An Evaluation's outputs: its metrics and test logits."""
    return {"metrics": read_json(Path(targets["metrics"].path), {}),
            "logits": np.load(targets["logits"].path, allow_pickle=False)}


def run_results(task: EvaluateStudent) -> dict:
    """One student run for the report: test metrics and logits, training seconds, history."""
    history = read_json(task.requires()["model"].folder() / "history.json", [])
    return {**evaluation(task.output()), "seconds": training_seconds(history), "history": history}


def cache_results(study: dict, images: int) -> dict:
    """One cache of the study: its settings, bytes on disk per image of the data set, the
    pass's cost and the study's students' kd metrics and test logits."""
    cache = study["cache"]
    size = sum(f.stat().st_size for f in cache.cache_path().rglob("*") if f.is_file())
    cost, settings = cache.cost(), cache.cache_settings()
    return {"cache": settings, "logits": cache.coding().describe(settings["feature_dtype"]),
            "main": cache.variant == "", "bytes_per_image": size / images,
            "pass_seconds": cost.get("seconds"), "forwards": cost.get("forwards"),
            "students": {name: evaluation(task.output()) for name, task in study["students"].items()}}


def cache_description(cache: CacheTeacher) -> str:
    """'8 views per training image, logits: top-5, flat tail; int8 features'."""
    settings = cache.cache_settings()
    features = settings["feature_dtype"]
    return f"{settings['views']} views per training image, logits: {cache.coding().describe(features)}; " \
           f"{features} features"


def training_seconds(history: list[dict]) -> float | None:
    return round(sum(epoch["seconds"] for epoch in history), 1) if history else None


class RunAll(ConfigCheckedTask, luigi.WrapperTask):
    """Every data set x every student x [train] modes, the cache study, and a report per data set."""

    def requires(self):
        return [Report(name) for name in datasets()]


@RunAll.event_handler(luigi.Event.SUCCESS)
@RunAll.event_handler(luigi.Event.DEPENDENCY_PRESENT)
def _say_where(task) -> None:
    if isinstance(task, RunAll):
        for report in task.requires():
            print(f"report: {report.output().path}")

"""Report: the paper's table for one data set. RunAll: every data set, student and mode."""
from __future__ import annotations

import json

import luigi

from pipeline.evaluation.report import write_report
from tasks.base import Step
from tasks.check import Checked
from tasks.config import datasets, kd, students, teacher, train
from tasks.student import MODES, EvaluateStudent
from tasks.teacher import EvaluateTeacher


class Report(Step):
    """Markdown + CSV + PNG: the teacher, then each student without and with KD."""

    kind = "report"

    def requires(self):
        return {"teacher": EvaluateTeacher(self.dataset),
                "students": {s: {m: EvaluateStudent(self.dataset, s, m) for m in MODES} for s in students()}}

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(self.folder() / "report.md")

    def work(self) -> None:
        read = lambda target: json.loads(open(target.path).read())  # noqa: E731
        t = read(self.input()["teacher"])
        rows = []
        for name, modes in self.input()["students"].items():
            metrics = {m: read(target) for m, target in modes.items()}
            rows.append({"name": name, "model": metrics["kd"]["model"], "params": metrics["kd"]["params"],
                         **metrics})
        k, s = kd(), train()
        notes = [
            f"Test split of `{self.dataset}`; {s.epochs} epochs, batch {s.batch_size}, {s.image_size} px, seed {s.seed}.",
            f"KD: alpha {k.alpha}, T {k.temperature}, beta {k.beta} ({k.feature_loss}), hard {k.hard}; "
            f"teacher targets from the cache, {teacher().views} cached views per training image.",
            "acc = top-1 accuracy (%); mAP = mean over classes of non-interpolated average precision, "
            "one-vs-rest on softmax scores (%); gain = KD minus baseline, in points.",
        ]
        path = write_report(self.folder(), f"{self.dataset}: students without and with distillation",
                            notes, {"name": "teacher", "model": t["model"], "params": t["params"], "metrics": t},
                            rows)
        print(f"report written to {path}")


class RunAll(Checked, luigi.WrapperTask):
    """Every data set x every student x {baseline, kd}, and a report per data set."""

    def requires(self):
        return [Report(name) for name in datasets()]


@RunAll.event_handler(luigi.Event.SUCCESS)
@RunAll.event_handler(luigi.Event.DEPENDENCY_PRESENT)
def _say_where(task) -> None:
    if isinstance(task, RunAll):
        for report in task.requires():
            print(f"report: {report.output().path}")

"""The checks of the models: every student and the teacher build and run one image (with
the stages to cache), and the teacher's weights files fit it."""
from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import torch

import models
from cache.schema import LogitCoding
from cache.storage.fingerprint import digest, file_sha256
from pipeline.checks.problems import Problem, failure
from pipeline.checks.values import cache_key_problem, coding_problem
from pipeline.spec import parse_spec, parse_stages
from pipeline.training.build import INITS


def model_problems(settings: dict[str, dict[str, Any]], image_size: int | None, classes: dict[str, int]
                   ) -> list[Problem]:
    """The problems of every student and the teacher."""
    problems = [p for name, spec in settings.get("students", {}).items()
                for p in student_problems(name, spec, image_size)]
    if "teacher" in settings:
        problems += teacher_problems(settings["teacher"], image_size, classes)
    return problems


def models_passed(settings: dict[str, dict[str, Any]], image_size: int | None, classes: dict[str, int]
                  ) -> Path | None:
    """Where a check without problems remembers that model_problems found none, so a rerun of
    the same configuration (a no-op command) neither builds a model nor imports timm, which
    take seconds: <work>/.checked/models-<digest of all the verdict depends on: the specs and
    the teacher's settings, the image size, the class counts, the teacher's weights files
    (their sizes and mtimes), the versions of torch and timm and the code that builds and
    checks the models>. None without a work folder."""
    work = settings.get("paths", {}).get("work")
    if not work:
        return None
    teacher = settings.get("teacher", {})
    files = {}
    for key in ("init", "checkpoint"):
        if teacher.get(key) and Path(teacher[key]).is_file():
            stat = Path(teacher[key]).stat()
            files[key] = [stat.st_size, stat.st_mtime_ns]
    code = [file_sha256(path) for path in (*sorted(Path(models.__file__).parent.glob("*.py")), Path(__file__))]
    key = digest(settings.get("students"), teacher, image_size, classes, files, code,
                 torch.__version__, models.timm_version())
    return Path(work) / ".checked" / f"models-{key[:16]}"


def student_problems(name: str, spec: str, image_size: int | None) -> list[Problem]:
    """[students] name = spec must build and run one image."""
    return failure("students", name, spec, _build, spec, image_size)


def teacher_problems(teacher: dict[str, Any], image_size: int | None, classes: dict[str, int]) -> list[Problem]:
    """[teacher]: topk within every data set's classes (`classes`: data set -> class count),
    init and checkpoint files that exist and fit, a model that builds, stages it has."""
    problems = []
    topk = teacher.get("topk")
    if isinstance(topk, int) and topk >= 0 and (why := cache_key_problem("topk", topk, classes)):
        problems.append(Problem("teacher", "topk", topk, why))
    if found := coding_problem(teacher, classes):
        key, why = found
        problems.append(Problem("teacher", key, teacher.get(key), why))
    if teacher["init"] not in INITS and not Path(teacher["init"]).is_file():
        problems.append(Problem("teacher", "init", teacher["init"],
                                "use scratch, pretrained or the path of an existing weights file"))
    if teacher["checkpoint"] and not Path(teacher["checkpoint"]).is_file():
        problems.append(Problem("teacher", "checkpoint", teacher["checkpoint"],
                                "no such file; give a finished teacher's weights, or leave it empty to fine-tune one"))
    try:
        stages = parse_stages(teacher["stages"])
    except ValueError as error:
        return problems + [Problem("teacher", "stages", teacher["stages"], str(error))]
    model = failure("teacher", "model", teacher["model"], _build, teacher["model"], image_size)
    if model:
        return problems + model
    if any(LogitCoding.of(teacher, 1.0, count).through_head for count in classes.values()):
        problems += failure("teacher", "logit_dtype", teacher.get("logit_dtype"), _classifier, teacher["model"])
    problems += _weights(teacher, classes)
    if not stages:
        return problems
    return problems + failure("teacher", "stages", teacher["stages"], _build, teacher["model"], image_size, stages)


WEIGHTS_FIX = {
    "checkpoint": "give the weights of a {model} teacher finished on data set {dataset} ({count} classes), "
                  "or leave it empty to fine-tune one",
    "init": "use scratch, pretrained or weights of {model} (the classifier may differ: fine-tuning resets it)",
}


def _weights(teacher: dict[str, Any], classes: dict[str, int]) -> list[Problem]:
    """[teacher] checkpoint and init, where they name files, must hold the teacher's weights:
    a checkpoint whole, for each data set's class count; init all but the classifier."""
    model, kwargs = parse_spec(teacher["model"])
    problems = []
    for key in ("checkpoint", "init"):
        path = teacher[key]
        if (key == "init" and path in INITS) or not Path(path).is_file():
            continue  # no file (a missing one is a problem of its own)
        for dataset, count in classes.items():
            try:
                models.check_weights(path, model, count, head=key == "checkpoint", **kwargs)
            except ValueError as error:
                fix = WEIGHTS_FIX[key].format(model=model, dataset=dataset, count=count)
                problems.append(Problem("teacher", key, path, f"{error}; {fix}"))
                break  # one file, one problem
    return problems


@cache
def _classifier(spec: str) -> None:
    """The teacher's classifier must be one linear layer where a cache rebuilds logits through it."""
    name, kwargs = parse_spec(spec)
    models.check_classifier(name, **kwargs)


@cache  # a spec that built builds again: settings changed elsewhere do not pay for the models again
def _build(spec: str, image_size: int | None, stages: tuple[int, ...] = ()) -> None:
    name, kwargs = parse_spec(spec)
    models.check_build(name, image_size, stages, **kwargs)

"""The whole experiment's configuration, checked in seconds before any work starts: every
key is known, every data set opens and has train and test images of every class, every
model builds and runs one image, the teacher's weights files fit it, every number is in
range, the work folder is writable. All problems are returned together, each naming its
section, key, value and fix.

By what they check: values.py (the settings alone), datasets.py, models.py (the models and
the teacher's weights), machine.py (scheduler, SLURM, device, work folder)."""
from __future__ import annotations

from typing import Any

from pipeline.checks.datasets import check_dataset
from pipeline.checks.machine import machine_problems
from pipeline.checks.models import model_problems, models_passed
from pipeline.checks.problems import Problem, Range
from pipeline.checks.values import (
    cache_study_problems,
    chunk_problems,
    endpoint_problems,
    feature_problems,
    mode_problems,
    range_problems,
    recipe_problems,
    unknown_keys,
)

__all__ = ["Problem", "Range", "check", "check_dataset", "unknown_keys"]


def check(settings: dict[str, dict[str, Any]], ranges: dict[str, dict[str, Range]]) -> list[Problem]:
    """Every problem of `settings`: section -> key -> value, the typed values of [paths],
    [data], [compute], [slurm] (for scheduler = slurm), [teacher], [train], [kd] and
    [cache_study], and the spec strings of [datasets] and [students]; `ranges`: section ->
    key -> the Range its value must lie in. A missing section is not checked (the caller
    reports why it is missing). Data sets are judged by their item lists (no image is
    decoded), weights files by their keys and shapes. A check without problems is remembered
    in the work folder (models.models_passed): the same models are not built again."""
    problems = range_problems(settings, ranges) + machine_problems(settings)
    size = settings.get("train", {}).get("image_size")
    size = size if isinstance(size, int) and size >= 1 else None
    classes: dict[str, int] = {}  # data set -> class count, of those that open
    for name, spec in settings.get("datasets", {}).items():
        found, count = check_dataset(name, spec)
        problems += found
        if count is not None:
            classes[name] = count
    passed = models_passed(settings, size, classes)
    if passed is None or not passed.exists():
        problems += model_problems(settings, size, classes)
    for section in ("datasets", "students"):
        if section in settings and not settings[section]:
            problems.append(Problem(section, "(none)", "", f"add at least one line to [{section}]"))
    problems += mode_problems(settings.get("train", {}).get("modes"))
    if "cache_study" in settings:
        problems += cache_study_problems(settings["cache_study"], settings.get("students", {}), classes,
                                         settings.get("teacher"))
    problems += (feature_problems(settings) + chunk_problems(settings) + endpoint_problems(settings)
                 + recipe_problems(settings, "train") + recipe_problems(settings, "teacher"))
    if passed is not None and not problems:
        try:
            passed.parent.mkdir(parents=True, exist_ok=True)
            passed.touch()
        except OSError:
            pass  # not remembered (e.g. a full disk): the next check builds the models again
    return problems

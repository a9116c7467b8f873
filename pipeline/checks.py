"""The whole experiment's configuration, checked in seconds before any work starts: every
data set opens, every model builds and runs one image, every number is in range. All
problems are returned together, each naming its section, key, value and fix."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dask.utils import parse_bytes

import models
from pipeline.data.readers import open_source
from pipeline.device import compile_problem, device_problem
from pipeline.spec import parse_names, parse_spec, parse_stages
from pipeline.training.train import MODES

SCHEDULERS = ("threads", "processes", "synchronous", "slurm")


@dataclass(frozen=True)
class Problem:
    section: str
    key: str
    value: Any
    fix: str

    def __str__(self) -> str:
        return f"[{self.section}] {self.key} = {self.value}: {self.fix}"


@dataclass(frozen=True)
class Range:
    """low <= value <= high, or < where open."""
    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:  # NaN holds nowhere
        return ((value > self.low if self.low_open else value >= self.low)
                and (value < self.high if self.high_open else value <= self.high))

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


RANGES = {
    "data": {"store_size": Range(1), "val_fraction": Range(0, 1, high_open=True)},
    "compute": {"workers": Range(1), "threads": Range(0), "shard_rows": Range(1), "memory_budget_gb": Range(0)},
    "teacher": {"epochs": Range(0), "lr": Range(0, low_open=True), "views": Range(0)},
    "train": {"epochs": Range(1), "batch_size": Range(1), "lr": Range(0, low_open=True),
              "weight_decay": Range(0), "warmup_epochs": Range(0), "image_size": Range(1)},
    "kd": {"alpha": Range(0, 1), "temperature": Range(0, low_open=True), "beta": Range(0)},
}


def check(settings: dict[str, dict[str, Any]]) -> list[Problem]:
    """Every problem of `settings`: section -> key -> value, the typed values of [data],
    [compute], [slurm] (for scheduler = slurm), [teacher], [train], [kd] and [views_study], and the spec
    strings of [datasets] and [students]. A missing section is not checked (the caller
    reports why it is missing)."""
    problems = [Problem(section, key, value, f"must be {rule}")
                for section, rules in RANGES.items() for key, rule in rules.items()
                if (value := settings.get(section, {}).get(key)) is not None and not rule.holds(value)]
    scheduler = settings.get("compute", {}).get("scheduler")
    if scheduler is not None and scheduler not in SCHEDULERS and "://" not in scheduler:
        problems.append(Problem("compute", "scheduler", scheduler,
                                f"use {', '.join(SCHEDULERS)} or a cluster address such as tcp://host:8786"))
    if scheduler == "slurm":
        problems += _slurm(settings.get("slurm", {}))
    problems += _device(settings.get("compute", {}))
    size = settings.get("train", {}).get("image_size")
    size = size if isinstance(size, int) and size >= 1 else None
    for name, spec in settings.get("datasets", {}).items():
        problems += _failure("datasets", name, spec, _open_dataset, spec)
    for name, spec in settings.get("students", {}).items():
        problems += _failure("students", name, spec, _build, spec, size)
    for section in ("datasets", "students"):
        if section in settings and not settings[section]:
            problems.append(Problem(section, "(none)", "", f"add at least one line to [{section}]"))
    if "teacher" in settings:
        problems += _teacher(settings["teacher"], size)
    problems += _modes(settings.get("train", {}).get("modes"))
    if "views_study" in settings:
        problems += _views_study(settings["views_study"], settings.get("students", {}))
    return problems


def _modes(text: str | None) -> list[Problem]:
    if text is None:
        return []
    chosen = parse_names(text)
    if chosen and set(chosen) <= set(MODES):
        return []
    return [Problem("train", "modes", text, f"list one or more of {', '.join(MODES)}, comma-separated")]


def _views_study(study: dict[str, Any], students: dict[str, str]) -> list[Problem]:
    views, names = parse_names(study.get("views", "")), parse_names(study.get("students", ""))
    problems = []
    if not all(v.isdigit() for v in views):
        problems.append(Problem("views_study", "views", study["views"], "list view counts >= 0, e.g. 0,8,32"))
    if views and not names:
        problems.append(Problem("views_study", "students", "", "name the students of the study, e.g. vit,swin"))
    problems += [Problem("views_study", "students", name, f"not in [students] (it has: {', '.join(students)})")
                 for name in names if name not in students]
    return problems


def _teacher(t: dict[str, Any], size: int | None) -> list[Problem]:
    problems = []
    if t["init"] not in ("scratch", "pretrained") and not Path(t["init"]).is_file():
        problems.append(Problem("teacher", "init", t["init"],
                                "use scratch, pretrained or the path of an existing weights file"))
    if t["checkpoint"] and not Path(t["checkpoint"]).is_file():
        problems.append(Problem("teacher", "checkpoint", t["checkpoint"],
                                "no such file; give a finished teacher's weights, or leave it empty to fine-tune one"))
    try:
        stages = parse_stages(t["stages"])
    except ValueError as error:
        return problems + [Problem("teacher", "stages", t["stages"], str(error))]
    model = _failure("teacher", "model", t["model"], _build, t["model"], size)
    if model or not stages:
        return problems + model
    return problems + _failure("teacher", "stages", t["stages"], _build, t["model"], size, stages)


def _device(c: dict[str, Any]) -> list[Problem]:
    """The device must be on this machine (a task would fail on it later) and torch.compile
    able to run there when asked for. (Luigi's choices already check the precision.)"""
    if "device" not in c:
        return []
    if problem := device_problem(c["device"]):
        return [Problem("compute", "device", c["device"], problem)]
    if c.get("compile") and (problem := compile_problem(c["device"])):
        return [Problem("compute", "compile", True, problem)]
    return []


def _slurm(s: dict[str, Any]) -> list[Problem]:
    try:
        import dask_jobqueue  # noqa: F401 (the `cluster` extra)
    except ImportError:
        return [Problem("compute", "scheduler", "slurm", 'needs dask-jobqueue: pip install -e ".[cluster]"')]
    problems = [Problem("slurm", key, s[key], "must be >= 1")
                for key in ("cores", "processes", "jobs") if isinstance(s.get(key), int) and s[key] < 1]
    if isinstance(s.get("processes"), int) and isinstance(s.get("cores"), int) and s["processes"] > s["cores"] >= 1:
        problems.append(Problem("slurm", "processes", s["processes"], f"must be <= cores ({s['cores']})"))
    if "memory" in s:
        problems += _failure("slurm", "memory", s["memory"], parse_bytes, s["memory"])
    return problems


def _failure(section: str, key: str, value: Any, attempt, *args) -> list[Problem]:
    """[] if attempt(*args) succeeds, else the one problem it raised."""
    try:
        attempt(*args)
    except Exception as error:  # noqa: BLE001 (whatever fails here would fail the task later)
        return [Problem(section, key, value, f"{type(error).__name__}: {error}")]
    return []


def _open_dataset(spec: str) -> None:
    source, options = parse_spec(spec)
    open_source(source, **options)


def _build(spec: str, image_size: int | None, stages: tuple[int, ...] = ()) -> None:
    name, kwargs = parse_spec(spec)
    models.check_build(name, image_size, stages, **kwargs)

"""The whole experiment's configuration, checked in seconds before any work starts: every
key is known, every data set opens and has train and test images of every class, every
model builds and runs one image, the teacher's weights files fit it, every number is in
range, the work folder is writable. All problems are returned together, each naming its
section, key, value and fix."""
from __future__ import annotations

import difflib
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dask.utils import parse_bytes

import models
from cache.compact import FEATURE_DTYPES
from cache.storage.files import probe_writable
from pipeline.data.readers import open_source
from pipeline.data.source import Item, Source
from pipeline.runtime.device import compile_problem, device_problem
from pipeline.spec import MODES, parse_caches, parse_names, parse_randaugment, parse_spec, parse_stages
from pipeline.views.records import Recipe

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
    "data": {"store_size": Range(1), "val_fraction": Range(0, 1, high_open=True), "jpeg_quality": Range(1, 100),
             "chunk_rows": Range(1)},
    "compute": {"workers": Range(1), "threads": Range(0), "shard_rows": Range(1), "memory_budget_gb": Range(0)},
    "teacher": {"epochs": Range(0), "lr": Range(0, low_open=True), "views": Range(0), "topk": Range(0)},
    "train": {"epochs": Range(1), "batch_size": Range(1), "lr": Range(0, low_open=True),
              "weight_decay": Range(0), "warmup_epochs": Range(0), "image_size": Range(1), "processes": Range(1),
              "nodes": Range(1)},
    "kd": {"alpha": Range(0, 1), "temperature": Range(0, low_open=True), "beta": Range(0)},
}
RECIPE_RANGES = {"mixup": Range(0), "cutmix": Range(0), "mix_prob": Range(0, 1), "switch_prob": Range(0, 1),
                 "label_smoothing": Range(0, 1, high_open=True)}  # [train]'s and [teacher]'s
RANGES["train"].update(RECIPE_RANGES)
RANGES["teacher"].update(RECIPE_RANGES)


def check(settings: dict[str, dict[str, Any]]) -> list[Problem]:
    """Every problem of `settings`: section -> key -> value, the typed values of [paths],
    [data], [compute], [slurm] (for scheduler = slurm), [teacher], [train], [kd] and
    [cache_study], and the spec strings of [datasets] and [students]. A missing section is
    not checked (the caller reports why it is missing). Data sets are judged by their item
    lists (no image is decoded), weights files by their keys and shapes."""
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
    if "work" in settings.get("paths", {}):
        problems += _work(settings["paths"]["work"])
    size = settings.get("train", {}).get("image_size")
    size = size if isinstance(size, int) and size >= 1 else None
    classes: dict[str, int] = {}  # data set -> class count, of those that open
    for name, spec in settings.get("datasets", {}).items():
        found, count = check_dataset(name, spec)
        problems += found
        if count is not None:
            classes[name] = count
    for name, spec in settings.get("students", {}).items():
        problems += _failure("students", name, spec, _build, spec, size)
    for section in ("datasets", "students"):
        if section in settings and not settings[section]:
            problems.append(Problem(section, "(none)", "", f"add at least one line to [{section}]"))
    if "teacher" in settings:
        problems += _teacher(settings["teacher"], size, classes)
    problems += _modes(settings.get("train", {}).get("modes"))
    if "cache_study" in settings:
        problems += _cache_study(settings["cache_study"], settings.get("students", {}), classes)
    return (problems + _features_needed(settings) + _shards_order(settings) + _chunks(settings)
            + _recipe(settings, "train") + _recipe(settings, "teacher"))


def _recipe(settings: dict[str, dict[str, Any]], section: str) -> list[Problem]:
    """A section's recipe keys: RandAugment readable; views to apply it to; mixing partners of
    other classes (a partner is from the image's store shard)."""
    keys = settings.get(section, {})
    problems, randaugment = [], keys.get("randaugment", "")
    try:
        parse_randaugment(randaugment)
    except ValueError as error:
        problems.append(Problem(section, "randaugment", randaugment, str(error).split(": ", 1)[1]))
    mixes = Recipe(mixup=keys.get("mixup", 0), cutmix=keys.get("cutmix", 0), mix_prob=keys.get("mix_prob", 0)).mixes
    if (mixes or randaugment.strip()) and not settings.get("train", {}).get("augment", True):
        problems.append(Problem("train", "augment", False, f"[{section}]'s recipe draws random views: set "
                                "augment = true, or switch the recipe off"))
    if mixes and not settings.get("data", {}).get("shuffle_rows", True):
        problems.append(Problem(section, "mixup/cutmix", f"{keys.get('mixup')}/{keys.get('cutmix')}",
                                "a mixed image's partner is from its store shard, which in a store in the "
                                "source's order holds a few classes: set [data] shuffle_rows = true"))
    return problems


def _chunks(settings: dict[str, dict[str, Any]]) -> list[Problem]:
    """A shard holds whole chunks (zarr's rule)."""
    chunk, shard = settings.get("data", {}).get("chunk_rows"), settings.get("compute", {}).get("shard_rows")
    if isinstance(chunk, int) and isinstance(shard, int) and chunk >= 1 and shard % chunk:  # RANGES name < 1
        return [Problem("data", "chunk_rows", chunk, f"must divide [compute] shard_rows = {shard}")]
    return []


def _shards_order(settings: dict[str, dict[str, Any]]) -> list[Problem]:
    """The shards order mixes a batch from a few neighbouring shards: in a store in its source's
    order (an image folder's is class by class) such a batch holds a few classes."""
    if settings.get("train", {}).get("order") != "shards" or settings.get("data", {}).get("shuffle_rows", True):
        return []
    return [Problem("train", "order", "shards", "a batch then mixes a window's images, which in a store in the "
                    "source's order are of a few classes: set [data] shuffle_rows = true")]


def unknown_keys(section: str, present: dict[str, str], known: Iterable[str]) -> list[Problem]:
    """A problem for each key of `present` (key -> value as written) that is no setting of
    `section`, naming the nearest of its `known` keys: Luigi would ignore the key without a
    word and use the default. Keys written with dashes count as known (Luigi reads both)."""
    known = list(known)
    problems = []
    for key, value in present.items():
        if key.replace("-", "_") in known:
            continue
        close = difflib.get_close_matches(key.replace("-", "_"), known, n=2)
        hint = f"did you mean {' or '.join(close)}?" if close else f"[{section}] has {', '.join(known)}"
        problems.append(Problem(section, key, value, f"unknown key, so the default would be used; {hint}"))
    return problems


def _modes(text: str | None) -> list[Problem]:
    if text is None:
        return []
    chosen = parse_names(text)
    if chosen and set(chosen) <= set(MODES):
        return []
    return [Problem("train", "modes", text, f"list one or more of {', '.join(MODES)}, comma-separated")]


def _cache_study(study: dict[str, Any], students: dict[str, str], classes: dict[str, int]) -> list[Problem]:
    names = parse_names(study.get("students", ""))
    try:
        caches = parse_caches(study.get("caches", ""))
    except ValueError as error:
        return [Problem("cache_study", "caches", study["caches"], f"{error}; e.g. views=0; topk=5; feature_dtype=int8")]
    problems = []
    for cache in caches:
        problems += [Problem("cache_study", "caches", f"{key}={value}", why)
                     for key, value in cache.items() if (why := _cache_key_problem(key, value, classes))]
    if caches and not names:
        problems.append(Problem("cache_study", "students", "", "name the students of the study, e.g. vit,swin"))
    problems += [Problem("cache_study", "students", name, f"not in [students] (it has: {', '.join(students)})")
                 for name in names if name not in students]
    return problems


def _features_needed(settings: dict[str, dict[str, Any]]) -> list[Problem]:
    """A cache without features (feature_dtype = none) cannot serve the feature term or stage maps."""
    beta, t = settings.get("kd", {}).get("beta"), settings.get("teacher", {})
    uses = f"[kd] beta = {beta} distils the teacher's features" if isinstance(beta, float) and beta > 0 else None
    problems = []
    if t.get("feature_dtype") == "none" and (uses or t.get("stages")):
        why = uses or "[teacher] stages asks for feature maps"
        problems.append(Problem("teacher", "feature_dtype", "none",
                                f"{why}; cache them as float16 or int8, or set [kd] beta = 0 and no stages"))
    try:
        caches = parse_caches(settings.get("cache_study", {}).get("caches", ""))
    except ValueError:
        return problems  # _cache_study names it
    if uses and any(c.get("feature_dtype") == "none" for c in caches):
        problems.append(Problem("cache_study", "caches", "feature_dtype=none", f"{uses}: drop that cache, or "
                                "set [kd] beta = 0"))
    return problems


def _cache_key_problem(key: str, value: Any, classes: dict[str, int]) -> str | None:
    """Why a cache setting (views, topk or feature_dtype) cannot be, or None."""
    if key == "feature_dtype":
        return None if value in FEATURE_DTYPES else f"use one of {', '.join(FEATURE_DTYPES)}"
    if value < 0:
        return "must be 0 or more"
    fewest = min(classes.items(), key=lambda item: item[1], default=None)
    if key == "topk" and fewest and value > fewest[1]:
        return f"data set {fewest[0]} has {fewest[1]} classes: keep at most that many, or 0 for every class"
    return None


def _teacher(t: dict[str, Any], size: int | None, classes: dict[str, int]) -> list[Problem]:
    problems = []
    if isinstance(t.get("topk"), int) and t["topk"] >= 0 and (why := _cache_key_problem("topk", t["topk"], classes)):
        problems.append(Problem("teacher", "topk", t["topk"], why))
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
    if model:
        return problems + model
    problems += _weights(t, classes)
    return problems + (_failure("teacher", "stages", t["stages"], _build, t["model"], size, stages) if stages else [])


WEIGHTS_FIX = {
    "checkpoint": "give the weights of a {model} teacher finished on data set {dataset} ({count} classes), "
                  "or leave it empty to fine-tune one",
    "init": "use scratch, pretrained or weights of {model} (the classifier may differ: fine-tuning resets it)",
}


def _weights(t: dict[str, Any], classes: dict[str, int]) -> list[Problem]:
    """[teacher] checkpoint and init, where they name files, must hold the teacher's weights:
    a checkpoint whole, for each data set's class count; init all but the classifier."""
    model, kwargs = parse_spec(t["model"])
    problems = []
    for key in ("checkpoint", "init"):
        path = t[key]
        if (key == "init" and path in ("scratch", "pretrained")) or not Path(path).is_file():
            continue  # no file (a missing one is a problem of its own)
        for dataset, count in classes.items():
            try:
                models.check_weights(path, model, count, head=key == "checkpoint", **kwargs)
            except ValueError as error:
                fix = WEIGHTS_FIX[key].format(model=model, dataset=dataset, count=count)
                problems.append(Problem("teacher", key, path, f"{error}; {fix}"))
                break  # one file, one problem
    return problems


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


def _attempt(section: str, key: str, value: Any, attempt, *args) -> tuple[Any, list[Problem]]:
    """(attempt(*args), []) if it succeeds, else (None, [the one problem it raised])."""
    try:
        return attempt(*args), []
    except Exception as error:  # noqa: BLE001 (whatever fails here would fail the task later)
        return None, [Problem(section, key, value, f"{type(error).__name__}: {error}")]


def _failure(section: str, key: str, value: Any, attempt, *args) -> list[Problem]:
    """[] if attempt(*args) succeeds, else the one problem it raised."""
    return _attempt(section, key, value, attempt, *args)[1]


def _work(folder: str) -> list[Problem]:
    try:
        probe_writable(folder)
    except OSError as error:
        return [Problem("paths", "work", folder, f"cannot write there ({error}); give a folder this user can write")]
    return []


def check_dataset(name: str, spec: str) -> tuple[list[Problem], int | None]:
    """The problems of one [datasets] line, and its class count if it opens."""
    opened, problems = _attempt("datasets", name, spec, _open_dataset, spec)
    if problems:
        return problems, None
    source, items = opened
    return [Problem("datasets", name, spec, fix) for fix in _coverage(source.classes, items)], len(source.classes)


def _coverage(classes: list[str], items: list[Item]) -> list[str]:
    """Why a data set would train for nothing or report misleadingly: an empty train or test
    split; classes without any image, without test images or without training images."""
    splits = Counter(item.split for item in items)
    if empty := [split for split in ("train", "test") if not splits[split]]:
        counts = ", ".join(f"{splits[split]} {split}" for split in ("train", "val", "test"))
        return [f"no {' and no '.join(empty)} images ({counts}); give it train and test images (an HDF5 "
                f"file without a `split` dataset of train/val/test or 0/1/2 puts every image in train)"]
    fit = Counter(item.label for item in items if item.split != "test")
    test = Counter(item.label for item in items if item.split == "test")
    groups = defaultdict(list)  # (has training images, has test images) -> class names
    for label, name in enumerate(classes):
        groups[bool(fit[label]), bool(test[label])].append(name)
    return [f"{len(groups[has])} of {len(classes)} classes have {what}: {_few(groups[has])}{fix}"
            for has, (what, fix) in LACKING.items() if groups[has]]


LACKING = {  # (has training images, has test images) -> what a class lacks, and the fix
    (False, False): ("no image at all", "; an HDF5 file without class_names has a class for every label up to "
                                        "the largest: give class_names, or labels 0 to N-1"),
    (True, False): ("no test image", "; accuracy and mAP would say nothing of them: give each class test images"),
    (False, True): ("no training image (train or val)", "; no model would learn them: give each class training images"),
}


def _few(names: list[str], shown: int = 5) -> str:
    rest = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + rest


def _open_dataset(spec: str) -> tuple[Source, list[Item]]:
    """The source and its items: listing them finds what only a full listing shows (e.g. an
    empty class folder); it decodes no image."""
    source, options = parse_spec(spec)
    opened = open_source(source, **options)
    return opened, opened.items()


def _build(spec: str, image_size: int | None, stages: tuple[int, ...] = ()) -> None:
    name, kwargs = parse_spec(spec)
    models.check_build(name, image_size, stages, **kwargs)

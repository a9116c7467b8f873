"""The checks of the settings' values alone, needing no file: numbers in range, known keys
and modes, the recipe, chunks and shards, where the ranks meet, the cache study, features."""
from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from cache.compact import FEATURE_DTYPES
from cache.schema import LOGIT_DTYPES, TAILS, LogitCoding
from pipeline.checks.problems import Problem, Range
from pipeline.spec import MODES, cache_text, parse_caches, parse_names, parse_randaugment
from pipeline.views.records import Recipe

Settings = dict[str, dict[str, Any]]  # section -> key -> value


def range_problems(settings: Settings, ranges: dict[str, dict[str, Range]]) -> list[Problem]:
    """Each value of `settings` outside its range (`ranges`: section -> key -> Range)."""
    return [Problem(section, key, value, f"must be {rule}")
            for section, rules in ranges.items() for key, rule in rules.items()
            if (value := settings.get(section, {}).get(key)) is not None and not rule.holds(value)]


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


def mode_problems(text: str | None) -> list[Problem]:
    """[train] modes must list known modes."""
    if text is None:
        return []
    chosen = parse_names(text)
    if chosen and set(chosen) <= set(MODES):
        return []
    return [Problem("train", "modes", text, f"list one or more of {', '.join(MODES)}, comma-separated")]


def recipe_problems(settings: Settings, section: str) -> list[Problem]:
    """A section's recipe keys: RandAugment readable; views to apply it to."""
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
    return problems


def chunk_problems(settings: Settings) -> list[Problem]:
    """A shard holds whole chunks (zarr's rule)."""
    chunk, shard = settings.get("data", {}).get("chunk_rows"), settings.get("compute", {}).get("shard_rows")
    if isinstance(chunk, int) and isinstance(shard, int) and chunk >= 1 and shard % chunk:  # < 1 is out of range
        return [Problem("data", "chunk_rows", chunk, f"must divide [compute] shard_rows = {shard}")]
    return []


def endpoint_problems(settings: Settings) -> list[Problem]:
    """[train] rdzv_endpoint: host:port where given, and given where the ranks span nodes."""
    endpoint, nodes = settings.get("train", {}).get("rdzv_endpoint"), settings.get("train", {}).get("nodes")
    if endpoint:
        host, _, port = endpoint.rpartition(":")
        if host and port.isdigit() and 0 < int(port) < 65536:
            return []
        return [Problem("train", "rdzv_endpoint", endpoint, "give host:port, e.g. node001:29500 (the first node "
                        "of the allocation and a free port)")]
    if isinstance(nodes, int) and nodes > 1:
        return [Problem("train", "rdzv_endpoint", "(empty)", f"[train] nodes = {nodes} needs the host:port where "
                        "the ranks meet, e.g. node001:29500 (the first node of the allocation and a free port)")]
    return []


CHOICES = {"feature_dtype": ("auto", *FEATURE_DTYPES), "tail": TAILS, "logit_dtype": LOGIT_DTYPES}


def cache_key_problem(key: str, value: Any, classes: dict[str, int]) -> str | None:
    """Why a cache setting (spec.CACHE_KEYS) cannot be, or None; `classes`: data set -> class count."""
    if key in CHOICES:
        return None if value in CHOICES[key] else f"use one of {', '.join(CHOICES[key])}"
    if value < 0:
        return "must be 0 or more"
    fewest = min(classes.items(), key=lambda item: item[1], default=None)
    if key == "topk" and fewest and value > fewest[1]:
        return f"data set {fewest[0]} has {fewest[1]} classes: keep at most that many, or 0 for every class"
    return None


def coding_problem(cache: dict[str, Any], classes: dict[str, int]) -> tuple[str, str] | None:
    """(the key at fault, why) where a sampled tail of these cache settings cannot be drawn
    or logits cannot be rebuilt from the features; None where they can."""
    if LogitCoding.of(cache, 1.0).from_features and cache.get("feature_dtype") == "none":
        return "feature_dtype", ("logit_dtype = head rebuilds the logits from the features: keep them "
                                 "(feature_dtype = auto, float16, int8 or int4)")
    if cache.get("tail") != "sampled":
        return None
    if cache.get("samples", 0) < 1:
        return "samples", "tail = sampled draws `samples` classes a view: set samples to 1 or more (e.g. 32)"
    fewest = min(classes.items(), key=lambda item: item[1], default=None)
    if fewest and cache.get("topk", 0) >= fewest[1]:
        return "topk", f"data set {fewest[0]} has {fewest[1]} classes: topk = {cache['topk']} leaves no tail to sample"
    return None


def cache_study_problems(study: dict[str, Any], students: dict[str, str], classes: dict[str, int],
                         teacher: dict[str, Any] | None = None) -> list[Problem]:
    """[cache_study]: caches readable and possible (each over [teacher]'s settings),
    students among [students]."""
    names = parse_names(study.get("students", ""))
    try:
        caches = parse_caches(study.get("caches", ""))
    except ValueError as error:
        return [Problem("cache_study", "caches", study["caches"], f"{error}; e.g. views=0; topk=5; feature_dtype=int8")]
    problems = []
    for cache in caches:
        problems += [Problem("cache_study", "caches", f"{key}={value}", why)
                     for key, value in cache.items() if (why := cache_key_problem(key, value, classes))]
        if found := coding_problem({**(teacher or {}), **cache}, classes):
            problems.append(Problem("cache_study", "caches", cache_text(cache), found[1]))
    if caches and not names:
        problems.append(Problem("cache_study", "students", "", "name the students of the study, e.g. vit,swin"))
    problems += [Problem("cache_study", "students", name, f"not in [students] (it has: {', '.join(students)})")
                 for name in names if name not in students]
    return problems


def feature_problems(settings: Settings) -> list[Problem]:
    """A cache without features (feature_dtype = none) cannot serve the feature term or stage maps."""
    beta, teacher = settings.get("kd", {}).get("beta"), settings.get("teacher", {})
    uses = f"[kd] beta = {beta} distils the teacher's features" if isinstance(beta, float) and beta > 0 else None
    problems = []
    if teacher.get("feature_dtype") == "none" and (uses or teacher.get("stages")):
        why = uses or "[teacher] stages asks for feature maps"
        problems.append(Problem("teacher", "feature_dtype", "none",
                                f"{why}; cache them as float16 or int8, or set [kd] beta = 0 and no stages"))
    try:
        caches = parse_caches(settings.get("cache_study", {}).get("caches", ""))
    except ValueError:
        return problems  # cache_study_problems names it
    if uses and any(cache.get("feature_dtype") == "none" for cache in caches):
        problems.append(Problem("cache_study", "caches", "feature_dtype=none", f"{uses}: drop that cache, or "
                                "set [kd] beta = 0"))
    return problems

"""The check of a [datasets] line: the data set opens and has train and test images of every
class. Judged by its images per split and class (readers.split_counts): no image is decoded."""
from __future__ import annotations

from collections import Counter, defaultdict

from pipeline.checks.problems import Problem, attempt
from pipeline.data.readers import open_source, split_counts
from pipeline.data.source import Source
from pipeline.spec import parse_spec


def check_dataset(name: str, spec: str) -> tuple[list[Problem], int | None]:
    """The problems of one [datasets] line, and its class count if it opens."""
    opened, problems = attempt("datasets", name, spec, _open_dataset, spec)
    if problems:
        return problems, None
    source, counts = opened
    return [Problem("datasets", name, spec, fix) for fix in _coverage(source.classes, counts)], len(source.classes)


def _coverage(classes: list[str], counts: Counter[tuple[str, int]]) -> list[str]:
    """Why a data set of `counts` images per (split, label) would train for nothing or report
    misleadingly: an empty train or test split; classes without any image, without test
    images or without training images."""
    splits = Counter()
    for (split, _), n in counts.items():
        splits[split] += n
    if empty := [split for split in ("train", "test") if not splits[split]]:
        total = ", ".join(f"{splits[split]} {split}" for split in ("train", "val", "test"))
        return [f"no {' and no '.join(empty)} images ({total}); give it train and test images (a source "
                f"without a split holds out a `holdout=` fraction of each class as test)"]
    fit = {label for split, label in counts if split != "test"}
    test = {label for split, label in counts if split == "test"}
    groups = defaultdict(list)  # (has training images, has test images) -> class names
    for label, name in enumerate(classes):
        groups[label in fit, label in test].append(name)
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


def _open_dataset(spec: str) -> tuple[Source, Counter[tuple[str, int]]]:
    """The source and its images per (split, label): counting them finds what only a full
    listing shows (e.g. an empty class folder); it decodes no image."""
    source, options = parse_spec(spec)
    opened = open_source(source, **options)
    return opened, split_counts(opened)

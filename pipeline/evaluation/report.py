"""The paper-style comparison for one data set: the teacher and its one-off cost, then per
student accuracy and mAP per training mode, the gains between modes with paired bootstrap
intervals, and training seconds; as Markdown, CSV and two PNG charts."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from cache.storage.files import atomic_write_text
from pipeline.evaluation.bootstrap import bootstrap_values, interval, paired_interval
from pipeline.spec import MODES

PAIRS = (("kd", "baseline"), ("online", "baseline"), ("kd", "online"), ("teacher", "baseline"))
SUFFIX = {"baseline": "", "kd": " KD", "online": " online"}  # plain acc/mAP: no distillation
GAIN = {("kd", "baseline"): " KD gain", ("online", "baseline"): " online gain", ("kd", "online"): " KD-online",
        ("teacher", "baseline"): " teacher lead"}
SHORT = {"top1": "acc", "mAP": "mAP"}


def write_report(out_dir: Path, title: str, notes: list[str], teacher: dict, labels: np.ndarray,
                 students: list[dict], study: list[dict] | None = None, resamples: int = 2000,
                 seed: int = 0) -> Path:
    """Write report.csv, caches.csv (given a study), report.png, curves.png and, last, report.md
    into out_dir; return the Markdown's path. Metrics are fractions in, percent out.

    teacher: {"name", "model", "params", "metrics": {"top1", "mAP"}, "fit_seconds",
      "pass_seconds", "forwards" (each may be None), "history": [{"epoch", "val_top1"}, ...]},
      and "logits" (N, C) for its lead over each student's baseline, if given.
    labels: (N,) test labels, the rows of every run's logits.
    students: [{"name", "model", "params", "runs": {mode: {"metrics": {"top1", "mAP"},
      "logits": (N, C), "seconds": training wall time, "history": [...]}}}], modes a subset
      of MODES; a gain is shown for each pair of PAIRS a student ran both of.
    study: [{"cache": {"views", "feature_dtype"}, "logits": how they are kept, "main": bool, "bytes_per_image",
      "forwards", "pass_seconds", "students": {name: {"metrics", "logits"}}}] (kd runs from
      caches of other settings, each gain against the student's kd run from the main cache,
      "main": True), or None."""
    # matplotlib imported here, not at the top: every command imports the tasks, few draw
    from pipeline.evaluation.charts import cache_figure, curves_figure, save_png, summary_figure

    out_dir.mkdir(parents=True, exist_ok=True)
    modes = [m for m in MODES if m == "baseline" or any(m in s["runs"] for s in students)]
    # The teacher is compared with each student as one more run of it.
    runs = {s["name"]: {**s["runs"], **({"teacher": teacher} if teacher.get("logits") is not None else {})}
            for s in students}
    pairs = [p for p in PAIRS if any(set(p) <= set(r) for r in runs.values())]
    gains = run_gains(labels, runs, resamples, seed)
    columns = table_columns(modes, pairs)
    rows = [teacher_row(teacher)] + [student_row(s, gains[s["name"]]) for s in students]
    atomic_write_text(out_dir / "report.csv", _csv(columns, rows))
    lines = [f"# {title}", "", *_markdown(columns, rows)]
    if study:
        main_kd = {s["name"]: s["runs"]["kd"]["logits"] for s in students if "kd" in s["runs"]}
        study_columns, study_rows = cache_table(study, main_kd, labels, resamples, seed)
        atomic_write_text(out_dir / "caches.csv", _csv(study_columns, study_rows))
        lines += ["", "## What the cache keeps: kd from other caches", "", *_markdown(study_columns, study_rows),
                  "", "views: cached random views per training image; logits: how each view's are kept "
                  "(every class, top-k with its tail flat, tempered or sampled); features: their stored "
                  "type; bytes/image: the whole cache on disk over the data set's images; gain: over the "
                  "same student's kd run from the main cache, in points, with its paired 95% interval.",
                  "", "![kd top-1 against the cache's bytes](caches.png)"]
        save_png(cache_figure(title, study_rows, list(dict.fromkeys(n for c in study for n in c["students"])),
                              SHORT["top1"]), out_dir / "caches.png")
    save_png(summary_figure(title, teacher, students, modes, gains, pairs), out_dir / "report.png")
    save_png(curves_figure(title, teacher, students), out_dir / "curves.png")
    missed = sum(not low <= point <= high for g in gains.values() for point, low, high in g.values())
    for paragraph in [*notes, bootstrap_note(len(labels), resamples, seed, missed)]:
        lines += ["", paragraph]
    lines += ["", "![accuracy, mAP and gains](report.png)", "", "![validation top-1 per epoch](curves.png)", ""]
    atomic_write_text(out_dir / "report.md", "\n".join(lines))
    return out_dir / "report.md"


def run_gains(labels: np.ndarray, runs: dict[str, dict], resamples: int,
              seed: int) -> dict[str, dict[tuple, tuple]]:
    """{student: {(a, b, metric): (point, low, high)}} in fractions for each pair of PAIRS in
    the student's runs {mode: run}. Every run is scored once (the teacher, in every student's
    runs, too) on the same resamples (one seed), so each pair is a paired bootstrap."""
    logits = {id(run["logits"]): run["logits"] for modes in runs.values() for run in modes.values()}
    values = bootstrap_values(labels, logits, tuple(SHORT), resamples, seed)

    def gain(modes: dict, a: str, b: str, key: str) -> tuple:
        (point_a, on_a), (point_b, on_b) = (values[id(modes[m]["logits"]), key] for m in (a, b))
        return interval(point_a - point_b, on_a - on_b)

    return {name: {(a, b, key): gain(modes, a, b, key) for key in SHORT for a, b in PAIRS if a in modes and b in modes}
            for name, modes in runs.items()}


def table_columns(modes: list[str], pairs: list[tuple[str, str]]) -> list[str]:
    """The main table's columns for the modes and gain pairs present."""
    return (["model", "timm name", "params (M)"] + [f"{SHORT[k]}{SUFFIX[m]}" for m in modes for k in SHORT]
            + [f"{SHORT[k]}{GAIN[p]}" for p in pairs for k in SHORT]
            + [f"train s{SUFFIX[m]}" for m in modes] + ["cache pass s", "cache forwards"])


def teacher_row(teacher: dict) -> dict:
    """The teacher under the no-distillation columns, with its one-off cost."""
    return {"model": teacher["name"], "timm name": teacher["model"], "params (M)": round(teacher["params"] / 1e6, 2),
            "acc": _pct(teacher["metrics"]["top1"]), "mAP": _pct(teacher["metrics"]["mAP"]),
            "train s": _round_seconds(teacher.get("fit_seconds")),
            "cache pass s": _round_seconds(teacher.get("pass_seconds")), "cache forwards": teacher.get("forwards")}


def student_row(student: dict, gains: dict[tuple, tuple]) -> dict:
    """Accuracy, mAP and seconds per mode run; gains as (point, low, high) in points."""
    row = {"model": student["name"], "timm name": student["model"], "params (M)": round(student["params"] / 1e6, 2)}
    for mode, run in student["runs"].items():
        row |= {f"{SHORT[k]}{SUFFIX[mode]}": _pct(run["metrics"][k]) for k in SHORT}
        row[f"train s{SUFFIX[mode]}"] = _round_seconds(run.get("seconds"))
    for (a, b, key), bounds in gains.items():
        row[f"{SHORT[key]}{GAIN[a, b]}"] = tuple(_pct(v) for v in bounds)
    return row


def cache_table(study: list[dict], main_kd: dict[str, np.ndarray], labels: np.ndarray, resamples: int,
                seed: int) -> tuple[list[str], list[dict]]:
    """One row per cache of the study: its settings and cost, each student's kd accuracy
    and mAP and, but for the main cache, their gains over kd from the main cache."""
    names = list(dict.fromkeys(n for c in study for n in c["students"]))
    columns = (["views", "logits", "features", "bytes/image", "forwards", "pass s"]
               + [f"{n} {SHORT[k]}{gain}" for n in names for gain in ("", " gain") for k in SHORT])
    rows = []
    for c in study:
        row = {"views": c["cache"]["views"], "logits": c["logits"],
               "features": c["cache"]["feature_dtype"], "bytes/image": round(c["bytes_per_image"]),
               "forwards": c["forwards"], "pass s": _round_seconds(c.get("pass_seconds"))}
        for n, run in c["students"].items():
            row |= {f"{n} {SHORT[k]}": _pct(run["metrics"][k]) for k in SHORT}
            if not c["main"] and n in main_kd:
                row |= {f"{n} {SHORT[k]} gain": tuple(_pct(v) for v in paired_interval(
                    labels, run["logits"], main_kd[n], k, resamples, seed)) for k in SHORT}
        rows.append(row)
    return columns, rows


def bootstrap_note(images: int, resamples: int, seed: int, missed: int) -> str:
    """What the table's intervals are; `missed`: how many of them do not hold their point."""
    return (f"Gains are in points, [low, high] their 95% interval: a paired bootstrap over the {images} test "
            f"images ({resamples} resamples, seed {seed}; each draws {images} images with replacement, the "
            "same images for both runs), percentile interval of the difference. "
            + (f"{missed} of the intervals do not hold their gain, as computed: with few test images a class, "
               "a resample repeats or loses a class's positives, which biases its mAP. " if missed else "")
            + "train s: training wall time; cache pass s and cache forwards: the teacher's one-off pass that "
            "fills the cache.")


def _csv(columns: list[str], rows: list[dict]) -> str:
    """An interval column becomes three: the point, then `low` and `high`."""
    header = [c for col in columns for c in ((col, f"{col} low", f"{col} high") if _is_interval(col, rows) else (col,))]
    body = [[v for col in columns for v in _cells(row.get(col), _is_interval(col, rows))] for row in rows]
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *body])
    return buf.getvalue()


def _cells(value, interval: bool) -> tuple:
    if not interval:
        return ("" if value is None else value,)
    return value if value is not None else ("", "", "")


def _is_interval(column: str, rows: list[dict]) -> bool:
    return any(isinstance(row.get(column), tuple) for row in rows)


def _markdown(columns: list[str], rows: list[dict]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(_show(row.get(c)) for c in columns) + " |" for row in rows]


def _show(value) -> str:
    """A cell for people: empty when absent, a gain as `+3.1 [+1.2, +4.9]`."""
    if value is None:
        return ""
    if isinstance(value, tuple):
        return f"{value[0]:+.1f} [{value[1]:+.1f}, {value[2]:+.1f}]"
    return str(value)


def _pct(x: float) -> float:
    return round(100 * x, 1)


def _round_seconds(s: float | None) -> float | None:
    return None if s is None else round(s, 1)

"""The report: columns for the modes that ran, gains with intervals, CSV, charts, views."""
import csv
import json

import numpy as np
import pytest

from pipeline.bench import report as report_bench
from pipeline.evaluation.bootstrap import paired_interval
from pipeline.evaluation.charts import padded_range, summary_figure
from pipeline.evaluation.metrics import classification_metrics
from pipeline.evaluation.report import run_gains, write_report
from tasks.report import run_settings_notes

N, C = 60, 5
LABELS = np.random.default_rng(0).integers(0, C, N)


def _run(seed: int, signal: float) -> dict:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(N, C)) + signal * np.eye(C)[LABELS]
    history = [{"epoch": e, "loss": 1.0 / e, "seconds": 2.5, "val_top1": 0.05 * e} for e in (1, 2, 3)]
    return {"metrics": classification_metrics(logits, LABELS), "logits": logits, "seconds": 7.5, "history": history}


def _inputs(modes=("baseline", "kd")):
    teacher = {"name": "teacher", "model": "convnext_atto", "params": 3_700_000,
               "metrics": {"top1": 0.38, "mAP": 0.35}, "fit_seconds": 1234.5, "pass_seconds": 56.7,
               "forwards": 4321, "history": [{"epoch": 1, "val_top1": 0.2}, {"epoch": 2, "val_top1": 0.3}]}
    students = [{"name": f"s{i}", "model": "vit_tiny", "params": 5_000_000,
                 "runs": {m: _run(10 * i + j, 0.3 + 0.4 * j) for j, m in enumerate(modes)}} for i in (1, 2)]
    return teacher, students


def _write(tmp_path, modes=("baseline", "kd"), study=None):
    teacher, students = _inputs(modes)
    study = study(students) if study else None
    path = write_report(tmp_path, "demo", ["a note"], teacher, LABELS, students, study, resamples=200)
    with open(tmp_path / "report.csv") as f:
        return path.read_text(), list(csv.DictReader(f)), students


@pytest.mark.slow
def test_baseline_and_kd_only(tmp_path):
    md, rows, students = _write(tmp_path)
    header = md.splitlines()[2]
    assert "acc KD gain" in header and "mAP KD gain" in header and "train s KD" in header
    assert "online" not in md.split("Gains are")[0]
    assert "paired bootstrap over the 60 test images (200 resamples, seed 0" in md
    assert [r["model"] for r in rows] == ["teacher", "s1", "s2"]
    t = rows[0]
    assert (t["acc"], t["train s"], t["cache pass s"], t["cache forwards"], t["acc KD"]) == \
        ("38.0", "1234.5", "56.7", "4321", "")
    s1 = students[0]["runs"]
    assert float(rows[1]["acc KD"]) == round(100 * s1["kd"]["metrics"]["top1"], 1)
    assert float(rows[1]["train s KD"]) == 7.5
    assert md.index("](report.png)") < md.index("](curves.png)")
    assert (tmp_path / "report.png").stat().st_size > 0 and (tmp_path / "curves.png").stat().st_size > 0
    assert not (tmp_path / "caches.csv").exists()


@pytest.mark.slow
def test_online_columns_and_intervals(tmp_path):
    md, rows, students = _write(tmp_path, ("baseline", "kd", "online"))
    for column in ("acc online", "acc online gain", "mAP online gain", "acc KD-online", "mAP KD-online",
                   "train s online"):
        assert f" {column} |" in md.splitlines()[2]
    for column in ("acc KD gain", "acc KD-online", "mAP online gain"):
        low, point, high = (float(rows[1][f"{column}{s}"]) for s in (" low", "", " high"))
        assert low <= point <= high
    runs = students[0]["runs"]
    gains = run_gains(LABELS, {"s": runs}, 200, 0)["s"]
    point, low, high = gains[("kd", "online", "top1")]
    assert gains[("online", "baseline", "mAP")] == paired_interval(
        LABELS, runs["online"]["logits"], runs["baseline"]["logits"], "mAP", 200, 0)
    assert point == pytest.approx(runs["kd"]["metrics"]["top1"] - runs["online"]["metrics"]["top1"])
    cell = f"{100 * point:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"
    assert f"| {cell} |" in next(line for line in md.splitlines() if line.startswith("| s1 |"))
    assert rows[0]["acc KD-online low"] == ""  # the teacher has no gains


def test_the_teachers_lead_over_each_baseline_when_its_logits_are_given(tmp_path):
    teacher, students = _inputs()
    assert "teacher lead" not in _write(tmp_path / "without")[0]  # no logits: no lead
    teacher |= _run(99, 1.5)
    md = write_report(tmp_path, "demo", [], teacher, LABELS, students, resamples=200).read_text()
    with open(tmp_path / "report.csv") as f:
        rows = list(csv.DictReader(f))
    lead = paired_interval(LABELS, teacher["logits"], students[1]["runs"]["baseline"]["logits"], "top1", 200, 0)
    assert [float(rows[2][f"acc teacher lead{s}"]) for s in ("", " low", " high")] == [round(100 * v, 1) for v in lead]
    assert " mAP teacher lead |" in md.splitlines()[2]


@pytest.mark.slow
def test_cache_table(tmp_path):
    other = _run(99, 0.1)

    def study(students):  # the main cache (its run is the students' kd run) and a top-5 one
        main = students[0]["runs"]["kd"]
        return [{"cache": {"views": 2, "topk": k, "feature_dtype": "float16"}, "main": not k,
                 "logits": f"top-{k}, flat tail" if k else "every class, float16",
                 "bytes_per_image": 80.0 * (1 + k), "forwards": 100, "pass_seconds": 1.5,
                 "students": {"s1": run}} for k, run in ((0, main), (5, other))]
    md, _, students = _write(tmp_path, study=study)
    assert "| views | logits | features | bytes/image | forwards | pass s | s1 acc | s1 mAP | s1 acc gain " in md
    assert "![kd top-1 against the cache's bytes](caches.png)" in md and (tmp_path / "caches.png").stat().st_size
    with open(tmp_path / "caches.csv") as f:
        main, top5 = list(csv.DictReader(f))
    assert (main["logits"], main["bytes/image"], main["s1 acc gain"]) == ("every class, float16", "80", "")
    assert top5["logits"] == "top-5, flat tail" and float(top5["s1 acc"]) == round(100 * other["metrics"]["top1"], 1)
    gain = paired_interval(LABELS, other["logits"], students[0]["runs"]["kd"]["logits"], "top1", 200, 0)
    assert [float(top5[f"s1 acc gain{end}"]) for end in ("", " low", " high")] == [round(100 * g, 1) for g in gain]


def test_axes_fit_small_values():
    assert padded_range([5.0, 40.0]) == pytest.approx((0.0, 44.8))
    assert padded_range([-2.0, 3.0]) == pytest.approx((-2.6, 3.6))
    teacher, students = _inputs()
    gains = run_gains(LABELS, {s["name"]: s["runs"] for s in students}, 100, 0)
    fig = summary_figure("demo", teacher, students, ["baseline", "kd"], gains, [("kd", "baseline")])
    top1 = fig.axes[0].get_ylim()[1]
    values = [100 * s["runs"][m]["metrics"]["top1"] for s in students for m in ("baseline", "kd")] + [38.0]
    assert max(values) < top1 < 1.2 * max(values) < 90
    assert fig.legends and not fig.axes[0].get_legend()  # the legend sits outside the axes


def test_the_report_says_how_its_runs_saw_their_images(luigi_config):
    store, recipe = run_settings_notes("demo")
    assert "raw uint8 at 32 px, rows in the source's order; each epoch's order: random" in store
    assert recipe.count("crop and flip only") == 2
    luigi_config("data", "image_format", "jpeg")
    luigi_config("data", "shuffle_rows", "true")
    luigi_config("train", "order", "shards")
    luigi_config("train", "randaugment", "2,9")
    luigi_config("teacher", "label_smoothing", "0.1")
    store, recipe = run_settings_notes("demo")
    assert "JPEG (quality 90) at 32 px, rows shuffled (seeded); each epoch's order: shards, 4 at a time" in store
    assert recipe == ("Recipe of the students and of the cached views: crop and flip, RandAugment 2 ops at "
                      "magnitude 9; of the teacher's fine-tuning: crop and flip, label smoothing 0.1.")


def test_an_interval_that_misses_its_point_is_written_and_drawn_as_computed(tmp_path):
    """500 classes of 3 test images: a resample repeats or loses a class's few positives,
    which biases its mAP, so a gain's percentile interval can miss the gain itself."""
    labels = np.repeat(np.arange(500), 3)
    rng = np.random.default_rng(0)

    def run(signal: float) -> dict:
        logits = rng.normal(size=(len(labels), 500)) + signal * np.eye(500)[labels]
        return {"metrics": classification_metrics(logits, labels), "logits": logits, "seconds": 1.0, "history": []}
    teacher, _ = _inputs()
    student = {"name": "s1", "model": "vit_tiny", "params": 5_000_000, "runs": {"baseline": run(0.0), "kd": run(3.0)}}
    md = write_report(tmp_path, "demo", [], teacher, labels, [student], resamples=200).read_text()
    point, low, high = run_gains(labels, {"s": student["runs"]}, 200, 0)["s"][("kd", "baseline", "mAP")]
    assert not low <= point <= high  # the case at hand
    row = next(line for line in md.splitlines() if line.startswith("| s1 |"))
    assert f"| {100 * point:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] |" in row
    assert "of the intervals do not hold their gain, as computed" in md
    assert (tmp_path / "report.png").stat().st_size > 0


def test_the_report_benchmark_times_a_report(tmp_path):
    """The benchmark's plumbing on a tiny size; its speeds are measured by running it, never here."""
    out = tmp_path / "report-bench.json"
    result = report_bench.main(["--images", "400", "--classes", "20", "--students", "2", "--resamples", "64",
                                "--json", str(out)])
    assert set(result["metrics"]) == {"report_seconds", "report_cpu_seconds"}
    assert result["metrics"]["report_seconds"]["goal"] == "<= 60" and result["metrics"]["report_seconds"]["median"] > 0
    assert len(result["top1"]) == 5 and result["calibration_img_per_s"] > 0  # two students' two runs, the teacher
    assert json.loads(out.read_text())["settings"]["images"] == 400

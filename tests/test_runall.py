"""The whole graph on a tiny experiment: it runs, reports, and reruns only what is new."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from luigi.configuration import get_config
from support.build import build
from support.config import TINY_CONVIT

from cache.reader import TeacherCache
from pipeline.bench.costs import cost_table, run_costs, task_name
from pipeline.runtime.tensorboard import EVENTS
from tasks import Report, RunAll
from tasks.config import paths
from tasks.student import TrainStudent
from tasks.teacher import CacheTeacher, FineTuneTeacher

pytestmark = pytest.mark.slow  # builds whole graphs
REPO = Path(__file__).resolve().parents[1]


def kinds(tasks) -> Counter:
    return Counter(type(t).__name__ for t in tasks)


def test_runall_reports_every_student_and_reruns_only_what_is_new(luigi_config):
    ok, ran = build(RunAll())
    assert ok
    assert kinds(ran) == Counter(PrepareDataset=1, FineTuneTeacher=1, CacheTeacher=1, EvaluateTeacher=1,
                                 TrainStudent=2, EvaluateStudent=2, Report=1, RunAll=1)
    report = Path(Report("demo").output().path)
    rows = list(csv.reader(open(report.with_suffix(".csv"))))
    assert [r[0] for r in rows[1:]] == ["teacher", "vit"]
    assert all(0 <= float(v) <= 100 for v in rows[2][3:7])
    assert report.with_suffix(".png").stat().st_size > 1000
    steps = [t for t in ran if not isinstance(t, RunAll)]
    costs = [json.loads((t.folder() / "cost.json").read_text()) for t in steps]
    assert [c["task"] for c in costs] == [t.task_id for t in steps]
    assert all(c["seconds"] > 0 and c["cpu_seconds"] > 0 for c in costs)
    assert all(100 < c["start_rss_mb"] <= c["peak_rss_mb"] for c in costs)  # torch alone takes more
    table = cost_table([run_costs(Path(paths().work), "demo")]).splitlines()
    assert sorted(line.split(" | ")[0][2:] for line in table[2:]) == sorted(task_name(t.task_id, "demo") for t in steps)
    trained = [t for t in ran if isinstance(t, TrainStudent | FineTuneTeacher)]
    assert all(any((t.folder() / EVENTS).glob("events.out.tfevents.*")) for t in trained)  # [train] logger
    hparam_runs = sorted(p.name for p in (report.parent / EVENTS).iterdir() if p.is_dir())
    assert hparam_runs == ["teacher", "vit-baseline", "vit-kd"]

    ok, ran = build(RunAll())
    assert ok and ran == []  # nothing changed: nothing runs
    assert no_op_imports() == []  # and a fresh process finds it so without importing what only work needs

    luigi_config("students", "convit", TINY_CONVIT)
    ok, ran = build(RunAll())
    assert ok
    assert kinds(ran) == Counter(TrainStudent=2, EvaluateStudent=2, Report=1, RunAll=1)
    assert {t.student for t in ran if hasattr(t, "student")} == {"convit"}
    rows = list(csv.reader(open(Path(Report("demo").output().path).with_suffix(".csv"))))
    assert [r[0] for r in rows[1:]] == ["teacher", "vit", "convit"]


def test_runall_in_bf16_on_the_cpu_writes_a_report(luigi_config):
    """Every model (teacher fine-tuning, teacher pass, students, evaluation) under CPU bf16
    autocast; losses stay float32 and the cache float16."""
    luigi_config("compute", "precision", "bf16")
    ok, ran = build(RunAll())
    assert ok and kinds(ran)["TrainStudent"] == 2
    rows = list(csv.reader(open(Path(Report("demo").output().path).with_suffix(".csv"))))
    assert [r[0] for r in rows[1:]] == ["teacher", "vit"]
    assert all(0 <= float(v) <= 100 for v in rows[2][3:7])
    for task in ran:
        if type(task).__name__ in ("FineTuneTeacher", "TrainStudent"):
            assert json.loads((task.folder() / "settings.json").read_text())["settings"]["precision"] == "bf16"
            history = json.loads((task.folder() / "history.json").read_text())
            assert all(math.isfinite(epoch["loss"]) for epoch in history)
    logits = TeacherCache(CacheTeacher("demo").cache_path()).group["eval/logits"][...]
    assert logits.dtype == np.float16 and np.isfinite(logits).all()


def test_changed_kd_setting_retrains_only_kd_students(luigi_config):
    assert build(RunAll())[0]
    luigi_config("kd", "alpha", "0.3")
    ok, ran = build(RunAll())
    assert ok
    assert {(type(t).__name__, getattr(t, "mode", None)) for t in ran} == {
        ("TrainStudent", "kd"), ("EvaluateStudent", "kd"), ("Report", None), ("RunAll", None)}


def no_op_imports() -> list[str]:
    """timm, torchvision and matplotlib if a fresh process's RunAll, under this test's
    configuration, imports them: a no-op builds no model, renders no view and draws no chart,
    and their imports take seconds."""
    config = get_config()
    settings = {section: dict(config.items(section)) for section in config.sections()}
    script = ("import json, sys, luigi; from luigi.configuration import get_config; config = get_config(); "
              "[config.remove_section(s) for s in config.sections()]; config.read_dict(json.loads(sys.argv[1])); "
              "from tasks import RunAll; assert luigi.build([RunAll()], local_scheduler=True); "
              "print(json.dumps(sorted({'timm', 'torchvision', 'matplotlib'} & set(sys.modules))))")
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(settings)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=True)
    return json.loads(proc.stdout.splitlines()[-1])


def test_failed_task_exits_nonzero(tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(f"[paths]\nwork = {tmp_path}/work\n[datasets]\nbroken = imagefolder:{tmp_path}/missing\n")
    proc = subprocess.run([sys.executable, "-m", "luigi", "--module", "tasks", "PrepareDataset",
                           "--dataset", "broken"], cwd=REPO, env={"LUIGI_CONFIG_PATH": str(cfg), "PATH": ""},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "missing" in proc.stderr + proc.stdout


def report_table(name: str = "report.csv") -> list[dict]:
    return list(csv.DictReader(open(Path(Report("demo").output().path).with_name(name))))


def test_adding_online_to_a_finished_experiment_trains_only_the_online_runs(luigi_config):
    assert build(RunAll())[0]
    assert "acc online" not in report_table()[0]
    luigi_config("train", "modes", "baseline,kd,online")
    ok, ran = build(RunAll())
    assert ok
    assert kinds(ran) == Counter(TrainStudent=1, EvaluateStudent=1, Report=1, RunAll=1)
    assert {t.mode for t in ran if hasattr(t, "mode")} == {"online"}
    teacher, vit = report_table()
    for column in ("acc online", "mAP online", "acc online gain", "acc KD-online", "acc KD-online low",
                   "acc KD-online high", "train s online"):
        assert vit[column] != "", column
    low, point, high = (float(vit[f"acc KD-online{end}"]) for end in (" low", "", " high"))
    assert low <= point <= high
    assert float(vit["train s online"]) > 0 and float(teacher["cache pass s"]) > 0


def test_cache_study_adds_only_its_caches_and_kd_runs(luigi_config):
    assert build(RunAll())[0]
    luigi_config("cache_study", "caches", "views=0; views=2")  # views=2 = [teacher]'s: the main cache
    ok, ran = build(RunAll())
    assert ok
    assert kinds(ran) == Counter(CacheTeacher=1, TrainStudent=1, EvaluateStudent=1, Report=1, RunAll=1)
    assert {(type(t).__name__, t.variant) for t in ran if hasattr(t, "variant")} == {
        ("CacheTeacher", "views=0"), ("TrainStudent", "views=0"), ("EvaluateStudent", "views=0")}
    rows = {int(r["views"]): r for r in report_table("caches.csv")}
    assert sorted(rows) == [0, 2]
    assert 0 < float(rows[0]["bytes/image"]) < float(rows[2]["bytes/image"])
    assert rows[2]["vit acc gain"] == "" and rows[0]["vit acc gain low"] <= rows[0]["vit acc gain"]

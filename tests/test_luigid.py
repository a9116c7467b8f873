"""The "Many machines" recipe of docs/operations.md, for real: luigid on a loopback port with the
shipped configs/luigid.cfg (task history in SQLite, resources), two workers at once with
configs/worker.cfg, on a tiny experiment."""
from __future__ import annotations

import csv
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from luigi.scheduler import scheduler
from PIL import Image
from support.config import TINY_CONVIT, tiny_settings
from support.luigid import REPO, luigid, read_config, run, run_workers, write_config

from tasks import CacheTeacher, FineTuneTeacher, TrainStudent
from tasks.__main__ import exit_code

pytestmark = pytest.mark.slow  # a real luigid and worker processes

EVERY_TASK = Counter(PrepareDataset=1, FineTuneTeacher=1, CacheTeacher=1, EvaluateTeacher=1,
                     TrainStudent=2, EvaluateStudent=2, Report=1, RunAll=1)
ONE_AT_A_TIME = {"teacher": "1", "train": "1"}  # luigid's [resources] in these tests
RETCODES = dict(read_config(REPO / "luigi.cfg")["retcode"])  # the shipped exit codes
COMPARED = {".safetensors", ".npy", ".csv"}  # with metrics.json: what two runs must share
WALL_TIME = re.compile(r"(^| )s( |$)")  # report columns of seconds ("train s KD", "pass s"): never equal
# luigid ignores "pending" for a task that was done this recently: a rerun waits it out
COOLDOWN = scheduler().stable_done_cooldown_secs


def experiment(folder: Path, **sections: dict) -> Path:
    """The tiny experiment as luigi.cfg in `folder`, with the shipped luigi.cfg's exit codes
    and one torch thread per task, so that two workers side by side train exactly as one
    worker alone."""
    settings = tiny_settings("work")
    settings["retcode"] = RETCODES
    settings["compute"]["threads"] = "1"
    settings["core"]["log_level"] = "INFO"
    for name, values in sections.items():
        settings.setdefault(name, {}).update(values)
    return write_config(folder / "luigi.cfg", settings)


def ran(events) -> Counter:
    """How often luigid handed out each task, by task id."""
    return Counter(e.task_id for e in events if e.event == "RUNNING")


def holding_intervals(events, families: set[str]) -> list[tuple]:
    """(start, end) of every run of the given task families, by luigid's clock."""
    start, spans = {}, []
    for e in events:
        if e.family in families and e.event == "RUNNING":
            start[e.task_id] = e.ts
        elif e.task_id in start and e.event in ("DONE", "FAILED"):
            spans.append((start.pop(e.task_id), e.ts))
    return sorted(spans)


def outputs(work: Path) -> dict[str, bytes | None]:
    """Every folder (None), and the bytes of the weights, metrics and reports."""
    compared = [p for p in work.rglob("*") if p.suffix in COMPARED or p.name == "metrics.json"]
    return {**{str(p.relative_to(work)): None for p in work.rglob("*") if p.is_dir()},
            **{str(p.relative_to(work)): content(p) for p in compared}}


def content(path: Path) -> bytes | list[list[str]]:
    """The file's bytes; a report table's cells, without its columns of seconds."""
    if path.suffix != ".csv":
        return path.read_bytes()
    rows = list(csv.reader(path.read_text().splitlines()))
    kept = [i for i, header in enumerate(rows[0]) if not WALL_TIME.search(header)]
    return [[row[i] for i in kept] for row in rows]


def assert_exit_0(results) -> None:
    for code, log in results:
        assert code == 0, log[-3000:]


def test_two_workers_through_luigid_run_each_task_once_as_one_local_run(tmp_path):
    local, shared = tmp_path / "local", tmp_path / "shared"
    experiment(local)
    experiment(shared)
    with luigid(tmp_path / "luigid", {"resources": ONE_AT_A_TIME}) as server:
        assert_exit_0(run_workers(shared, server.port, ["RunAll"], "first"))
        finished = time.monotonic()
        first = server.history()

        assert all(n == 1 for n in ran(first).values()), ran(first)
        assert Counter(e.family for e in first if e.event == "RUNNING") == EVERY_TASK
        assert all(e.event != "FAILED" for e in first)
        spans = holding_intervals(first, {"FineTuneTeacher", "TrainStudent"})  # [resources] train = 1
        assert len(spans) == 3 and all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans
        assert "TrainStudent" in server.page("/history")

        assert_exit_0(run([[sys.executable, "-m", "luigi", "--module", "tasks", "RunAll"]], local, "local"))
        assert outputs(shared / "work") == outputs(local / "work")

        experiment(shared, students={"convit": TINY_CONVIT})
        time.sleep(max(0.0, finished + COOLDOWN - time.monotonic()))
        assert_exit_0(run_workers(shared, server.port, ["RunAll"], "again"))
        again = server.history()[len(first):]
    assert all(n == 1 for n in ran(again).values()), ran(again)
    assert {(e.family, e.params.get("student")) for e in again if e.event == "RUNNING"} <= {
        ("TrainStudent", "convit"), ("EvaluateStudent", "convit"), ("Report", None), ("RunAll", None)}
    assert Counter(e.family for e in again if e.event == "RUNNING" and e.family != "RunAll") == Counter(
        TrainStudent=2, EvaluateStudent=2, Report=1)
    newest = max((shared / "work" / "demo").glob("report-*/report.md"), key=lambda p: p.stat().st_mtime)
    assert "| convit |" in newest.read_text()  # the first run's report (other students) stays beside it


def broken_images(root: Path) -> str:
    """The spec of a data set that opens, and passes the check with train and test images
    of each class, but holds an undecodable image."""
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for image in ("fine.png", "fine too.png"):
            Image.new("RGB", (8, 8)).save(root / name / image)
    (root / "b" / "broken.png").write_bytes(b"not an image")
    return f"imagefolder:{root} holdout=0.5"


def test_a_failure_in_one_worker_fails_both(tmp_path):
    """A data set with an undecodable image passes the configuration check and fails in
    whichever worker prepares it; luigid disables the task at once, so the worker that
    waited for it stops too, and neither exits 0."""
    folder = tmp_path / "shared"
    experiment(folder, datasets={"broken": broken_images(tmp_path / "images")})
    with luigid(tmp_path / "luigid", {}) as server:
        results = run_workers(folder, server.port, ["PrepareDataset", "--dataset", "broken"], "fail")
        history = server.history()
    codes = [code for code, _ in results]
    assert 0 not in codes and int(RETCODES["task_failed"]) in codes, codes
    failed = [e for e in history if e.event == "FAILED"]
    assert [e.family for e in failed] == ["PrepareDataset"]
    assert ran(history)[failed[0].task_id] == 1  # not retried by the other worker


def test_luigid_never_lets_two_tasks_hold_a_resource_of_one(tmp_path):
    """Two workers, two tasks that each hold `train` and wait a while for another holder:
    with luigid's `train = 1` neither ever sees one."""
    with luigid(tmp_path / "luigid", {"resources": ONE_AT_A_TIME}) as server:
        results = run_workers(tmp_path, server.port, ["Holders", "--folder", str(tmp_path)], "hold",
                              program=["-m", "luigi", "--module", "support.holders"])
        spans = holding_intervals(server.history(), {"Hold"})
    assert [code for code, _ in results] == [0, 0]
    assert [json.loads((tmp_path / f"hold-{n}.json").read_text()) for n in range(2)] == [{"others_holding": []}] * 2
    assert len(spans) == 2 and spans[0][1] <= spans[1][0], spans


def test_python_m_tasks_never_exits_0_for_an_incomplete_goal(luigi_config, tmp_path):
    """Not even where Luigi's own codes are all 0 (this config has no [retcode])."""
    luigi_config("datasets", "broken", broken_images(tmp_path / "images"))
    # --no-lock: Luigi's lock would take the second call in this process for a duplicate
    assert exit_code(["PrepareDataset", "--dataset", "broken", "--no-lock"]) == 1
    assert exit_code(["PrepareDataset", "--dataset", "demo", "--no-lock"]) == 0


def test_teacher_and_training_tasks_hold_their_resources():
    assert FineTuneTeacher.resources == {"teacher": 1, "train": 1}
    assert CacheTeacher.resources == {"teacher": 1}
    assert TrainStudent.resources == {"train": 1}

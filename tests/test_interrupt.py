"""A run stopped part-way: SIGTERM's log line and exit code, a rerun that resumes, and a
teacher pass whose seconds add up over its runs."""
from __future__ import annotations

import json
import re
import signal
from dataclasses import dataclass
from typing import ClassVar

import pytest
from support import slow_runs
from support.build import build
from support.kills import tiny_config, train_student, wait_for

import tasks.teacher
from tasks import CacheTeacher

pytestmark = pytest.mark.slow  # luigi commands in subprocesses, a teacher pass that sleeps

EPOCHS = 10


@pytest.mark.parametrize("workers", [1, 2])  # the task in Luigi's own process, or in a worker it forked
def test_sigterm_logs_where_the_task_stopped_exits_143_and_a_rerun_resumes(tmp_path, workers):
    config = tiny_config(tmp_path, {"core": {"log_level": "INFO"}, "train": {"epochs": str(EPOCHS)}})
    task = r"TrainStudent_demo_baseline_vit_\w+"

    first = tmp_path / "first.log"
    proc = train_student(config, first, workers)
    wait_for(proc, first, rf"{task}: epochs: 1/{EPOCHS} \(")
    proc.send_signal(signal.SIGTERM)  # to Luigi's process alone: it passes the signal on to its workers
    assert proc.wait(timeout=120) == 143, first.read_text()[-3000:]
    line = re.search(rf"WARNING: SIGTERM: {task} stopped at epochs (\d+)/{EPOCHS} \(the steps since the last "
                     r"checkpoint or the shard in progress are lost\); rerun the same command to resume "
                     r"\(exit code 143\)\n", first.read_text())
    assert line, first.read_text()[-3000:]
    stopped = int(line.group(1))
    assert 1 <= stopped < EPOCHS

    second = tmp_path / "second.log"
    proc = train_student(config, second, workers)
    assert proc.wait(timeout=300) == 0, second.read_text()[-3000:]
    # It starts from the last saved epoch: the one the line named (or the next, saved as the signal came).
    resumed = int(re.search(rf"{task}: epochs: (\d+)/{EPOCHS}\n", second.read_text()).group(1))
    assert resumed in (stopped, stopped + 1)
    history = json.loads(next((tmp_path / "work" / "demo").glob("student-vit-baseline-*/history.json")).read_text())
    assert [epoch["epoch"] for epoch in history] == list(range(1, EPOCHS + 1))


@dataclass(frozen=True)
class StoppingTeacherJob(slow_runs.SlowTeacherJob):
    """A teacher pass that sleeps in every block and stops (raises) after its first AFTER
    blocks in this process, once: a pass stopped part-way, its finished blocks kept."""
    AFTER: ClassVar[int] = 6
    delay: float = 0.8
    calls: ClassVar[list] = []

    def __call__(self, block: tuple) -> None:
        self.calls.append(block)
        if len(self.calls) == self.AFTER + 1:
            raise RuntimeError("the pass stops here")
        super().__call__(block)


def test_a_stopped_and_resumed_pass_counts_the_seconds_of_both_runs(luigi_config, monkeypatch, tmp_path):
    slow_runs.save_teacher(tmp_path / "teacher.safetensors")
    luigi_config("teacher", "checkpoint", str(tmp_path / "teacher.safetensors"))
    monkeypatch.setattr(tasks.teacher, "TeacherJob", StoppingTeacherJob)
    monkeypatch.setattr(StoppingTeacherJob, "calls", [])
    assert not build(CacheTeacher("demo"))[0]
    assert build(CacheTeacher("demo"))[0]
    kept = len(StoppingTeacherJob.calls) - 1  # every block, once, besides the one that stopped the pass
    assert kept > StoppingTeacherJob.AFTER  # the rerun had blocks to do
    # Each kept block slept `delay` in one run or the other; the last run alone slept fewer.
    assert CacheTeacher("demo").cost()["seconds"] >= kept * StoppingTeacherJob.delay

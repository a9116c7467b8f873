"""Progress off a terminal: log lines per epoch and per shards, in Luigi's own output."""
from __future__ import annotations

import configparser
import io
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.config import tiny_settings

from pipeline.runtime.progress import Progress, duration

pytestmark = pytest.mark.slow  # a luigi command in a subprocess

REPO = Path(__file__).resolve().parents[1]


def test_off_a_terminal_progress_logs_first_last_and_at_most_every_interval(monkeypatch, caplog):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: no bar
    log = logging.getLogger("test-progress")
    with caplog.at_level(logging.INFO, logger="test-progress"):
        progress = Progress(4, "shards", log=log, every=3600)
        for done in range(5):
            progress(done, rows=10 * done)
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["shards: 0/4", "shards: 4/4"]
    assert re.fullmatch(r"shards: 4/4, \d+ images/s, ETA 0 s", caplog.records[-1].getMessage())
    assert sys.stderr.getvalue() == ""


def test_duration_reads_like_a_person_would_write_it():
    assert [duration(s) for s in (4.4, 125, 4020)] == ["4 s", "2 min 05 s", "1 h 07 min"]


def test_luigi_output_shows_shard_and_epoch_lines_when_not_a_terminal(tmp_path):
    config = configparser.ConfigParser()
    config.read_dict(tiny_settings(str(tmp_path / "work")))
    config["core"]["log_level"] = "INFO"
    with open(tmp_path / "tiny.cfg", "w") as f:
        config.write(f)
    proc = subprocess.run([sys.executable, "-m", "luigi", "--module", "tasks", "TrainStudent", "--dataset", "demo",
                           "--student", "vit", "--mode", "baseline"],
                          cwd=REPO, env={"LUIGI_CONFIG_PATH": str(tmp_path / "tiny.cfg"), "PATH": ""},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    shards = re.search(r"INFO: PrepareDataset_demo_\w+: image store, shards: 0/(\d+)\n", out).group(1)
    assert re.search(rf"INFO: PrepareDataset_demo_\w+: image store, shards: {shards}/{shards}, \d+ images/s, "
                     r"ETA 0 s\n", out)
    for epoch in (1, 2):
        assert re.search(rf"INFO: TrainStudent_demo_baseline_vit_\w+: epochs: {epoch}/2 "
                         r"\(loss \d+\.\d{4}, val top-1 \d+\.\d%, \d+\.\d s\), ETA \d+ s\n", out)
    assert "it/s" not in out  # no tqdm bar in a log

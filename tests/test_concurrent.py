"""Two runs of one command started together on one work folder, as users do: both finish,
or the second is refused clearly, and the outputs equal a single run's."""
from __future__ import annotations

import configparser
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.build import build
from support.config import tiny_settings
from support.slow_runs import assert_same_files

from pipeline.runtime.lock import folder_lock
from tasks import CacheTeacher, PrepareDataset

pytestmark = pytest.mark.slow  # runs whole graphs in separate processes

REPO = Path(__file__).resolve().parents[1]


def start(cfg: Path, log: Path, pid_dir: Path) -> subprocess.Popen:
    """`luigi --module tasks CacheTeacher --dataset demo`; Luigi refuses a second identical
    command line while the first runs, but only one whose pid file it sees: `pid_dir`."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "luigi", "--module", "tasks", "CacheTeacher",
                                 "--dataset", "demo", "--lock-pid-dir", str(pid_dir)],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "LUIGI_CONFIG_PATH": str(cfg), "PYTHONPATH": str(REPO)})


def wait_for(text: str, log: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while text not in log.read_text():
        assert proc.poll() is None, f"the run exited before {text!r}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {text!r} within 120 s:\n{log.read_text()}"
        time.sleep(0.1)


def test_runs_started_together_finish_once_with_a_single_runs_outputs(luigi_config, tmp_path):
    config = configparser.ConfigParser()
    config.read_dict(tiny_settings(str(tmp_path / "work")))
    cfg = tmp_path / "tiny.cfg"
    with open(cfg, "w") as f:
        config.write(f)

    # Holding the store folder's lock keeps the runs waiting at their first write, past
    # Luigi's completeness check, until both are there: then they race for every task.
    with folder_lock(PrepareDataset("demo").folder()):
        first = start(cfg, tmp_path / "first.log", tmp_path / "pids")
        wait_for("waiting for", tmp_path / "first.log", first)
        same = start(cfg, tmp_path / "same.log", tmp_path / "pids")
        assert same.wait(timeout=120) == 10  # [retcode] already_running
        assert "already running" in (tmp_path / "same.log").read_text()
        # The same command where Luigi's pid file cannot see the first, as on another node.
        other = start(cfg, tmp_path / "other.log", tmp_path / "other-pids")
        wait_for("waiting for", tmp_path / "other.log", other)
    assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()
    assert other.wait(timeout=300) == 0, (tmp_path / "other.log").read_text()

    luigi_config("paths", "work", str(tmp_path / "single"))
    assert build(CacheTeacher("demo"))[0]
    together, single = tmp_path / "work" / "demo", tmp_path / "single" / "demo"
    assert sorted(p.name for p in together.iterdir()) == sorted(p.name for p in single.iterdir())
    for output in ["store-*/store.zarr", "cache-*/cache.zarr"]:
        assert_same_files(next(together.glob(output)), next(single.glob(output)))
    weights = "teacher-*/weights.safetensors"
    assert next(together.glob(weights)).read_bytes() == next(single.glob(weights)).read_bytes()

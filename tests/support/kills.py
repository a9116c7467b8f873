"""Runs killed midway: a writer (support/slow_runs.py) SIGKILLed once it has finished a
block, a progress callback that counts what a rerun had left to do, and a luigi command
in a subprocess to signal part way and the processes it leaves."""
from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cache.storage import blocks
from support import REPO, slow_runs
from support.config import tiny_settings


class Blocks:
    """A progress callback that records how many blocks a run had to do."""

    todo = 0

    def __call__(self, done: int, total: int, rows: int = 0) -> None:
        self.todo = total


def kill_after_first_block(args: list[str], root: Path, log: Path, ready: Callable[[], bool] = lambda: True) -> int:
    """Run tests/support/slow_runs.py with `args`, SIGKILL it as soon as a block of `root` is marked
    done (and `ready()`), and return how many blocks were done by then."""
    markers = root / blocks.MARKERS

    def done() -> int:
        return sum(not p.name.startswith(".") for p in markers.iterdir()) if markers.is_dir() else 0

    with open(log, "w") as stderr:
        # PYTHONPATH: the code under test, not whichever copy of the project is installed.
        proc = subprocess.Popen([sys.executable, slow_runs.__file__, *args], stderr=stderr,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 60
    while not (done() and ready()):
        assert proc.poll() is None, f"the writer exited early: {log.read_text()}"
        assert time.monotonic() < deadline, "no block was done within 60 s"
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    return done()


def tiny_config(folder: Path, changes: dict[str, dict[str, str]]) -> Path:
    """The tiny experiment, working in folder/work, with `changes` (section -> key -> value) laid
    over it, as the configuration file folder/tiny.cfg: for a luigi command in a subprocess."""
    config = configparser.ConfigParser()
    config.read_dict(tiny_settings(str(folder / "work")))
    config.read_dict(changes)
    with open(folder / "tiny.cfg", "w") as f:
        config.write(f)
    return folder / "tiny.cfg"


def train_student(config: Path, log: Path, workers: int = 1) -> subprocess.Popen:
    """A tiny baseline TrainStudent as a luigi command, its output (Luigi logs to stderr) into `log`."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "luigi", "--module", "tasks", "TrainStudent", "--dataset",
                                 "demo", "--student", "vit", "--mode", "baseline", "--workers", str(workers)],
                                cwd=REPO, env={"LUIGI_CONFIG_PATH": str(config), "PATH": ""},
                                stdout=out, stderr=subprocess.STDOUT)


def wait_for(proc: subprocess.Popen, log: Path, pattern: str, seconds: float = 300) -> None:
    """Wait until `log` holds `pattern`, failing if `proc` exits first or it takes over `seconds`."""
    deadline = time.monotonic() + seconds
    while not re.search(pattern, log.read_text()):
        assert proc.poll() is None, f"exited {proc.returncode} before {pattern!r}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {pattern!r} within {seconds} s"
        time.sleep(0.05)


def processes_naming(text: str) -> list[int]:
    """The processes whose command line holds `text` (say, the folder of the job they work on)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:  # it ended meanwhile
            continue
    return found

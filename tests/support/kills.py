"""Runs killed midway: a writer (support/slow_runs.py) SIGKILLed once it has finished a
block, and a progress callback that counts what a rerun had left to do."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cache.storage import blocks
from support import REPO, slow_runs


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

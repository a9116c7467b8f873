"""SIGTERM, what a batch scheduler sends first (SLURM: SIGKILL follows after a grace period).

Importing `tasks` installs the handler, so it covers Luigi's scheduling process, where tasks
run with --workers 1, and the worker processes it forks for --workers N; a task installs it
again when it starts running (`FingerprintedTask.run`). On SIGTERM a process logs one line
where Luigi logs: the task it was running and where it stopped (its last progress report,
`FingerprintedTask.reached`); then it passes the signal on to its child processes, waits for
them, flushes the logs and exits INTERRUPTED. Nothing else needs saving: every output is written
whole or resumably (training state after each epoch, stores and caches after each block),
so a stop loses the epoch or shard in progress, and rerunning the same command resumes.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.base import FingerprintedTask

INTERRUPTED = 128 + signal.SIGTERM  # 143, what a shell reports for a command SIGTERM ended
log = logging.getLogger("luigi-interface")
_running: list[FingerprintedTask] = []  # the task this process runs now, if any


def install() -> None:
    """Handle SIGTERM as above; Python runs signal handlers in the main thread, so only there."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)


@contextmanager
def running(task: FingerprintedTask) -> Iterator[None]:
    """Name `task` in the line a SIGTERM logs while the block runs."""
    install()  # again: a library imported since `tasks` (dask's, say) may have put its own handler in
    _running.append(task)
    try:
        yield
    finally:
        _running.remove(task)


def _stopped() -> str:
    """What a SIGTERM now stops in this process, for the log."""
    if not _running:
        return "stopped with no task running in this process"
    task = _running[-1]
    if task.reached is None:
        return f"{task.task_id} stopped before its first progress report (its work so far is lost)"
    return f"{task.task_id} stopped at {task.reached} (the epoch or shard in progress is lost)"


def _stop(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # SLURM signals every process, and a parent forwards it too
    log.warning("SIGTERM: %s; rerun the same command to resume (exit code %d)", _stopped(), INTERRUPTED)
    # A kill of this process alone (not of its group, as SLURM's) still stops Luigi's worker processes.
    children = multiprocessing.active_children()
    for child in children:
        os.kill(child.pid, signal.SIGTERM)
    for child in children:
        child.join()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(INTERRUPTED)  # now: Luigi would take an exception for a failed task and run the next

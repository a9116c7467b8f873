"""SIGTERM, what a batch scheduler sends first (SLURM: SIGKILL follows after a grace period).

Importing `tasks` installs the handler, so it covers Luigi's scheduling process, where tasks
run with --workers 1, and the worker processes it forks for --workers N; a task installs it
again when it starts running (`FingerprintedTask.run`). On SIGTERM a process logs one line
where Luigi logs: the task it was running and where it stopped (its last progress report,
`FingerprintedTask.reached`); then it passes the signal on to its child processes (Luigi's
workers, and a data-parallel job's torchrun, which stops its ranks), waits for them, flushes
the logs and exits INTERRUPTED; its GPU locks go with the process, once its ranks are gone.
Nothing else needs saving: every output is written whole or resumably (training state after
each epoch, stores and caches after each block), so a stop loses the epoch or shard in
progress, and rerunning the same command resumes.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.base import FingerprintedTask

INTERRUPTED = 128 + signal.SIGTERM  # 143, what a shell reports for a command SIGTERM ended
log = logging.getLogger("luigi-interface")
_running: list[FingerprintedTask] = []  # the task this process runs now, if any
_children: list[int] = []  # child processes multiprocessing does not know of (torchrun), by pid
GRACE = 60  # seconds a child has to stop before SIGKILL: torchrun gives its ranks 30 (--shutdown-timeout)


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


@contextmanager
def child(pid: int) -> Iterator[None]:
    """Pass a SIGTERM on to the child process `pid` too, and wait for it, while the block runs.
    The block must reap the child only after it ends (a Popen's `with` around this one)."""
    _children.append(pid)
    try:
        yield
    finally:
        _children.remove(pid)


def _stopped() -> str:
    """What a SIGTERM now stops in this process, for the log."""
    if not _running:
        return "stopped with no task running in this process"
    task = _running[-1]
    if task.reached is None:
        return f"{task.task_id} stopped before its first progress report (its work so far is lost)"
    return (f"{task.task_id} stopped at {task.reached} "
            "(the steps since the last checkpoint or the shard in progress are lost)")


def _stop(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # SLURM signals every process, and a parent forwards it too
    log.warning("SIGTERM: %s; rerun the same command to resume (exit code %d)", _stopped(), INTERRUPTED)
    # A kill of this process alone (not of its group, as SLURM's) still stops Luigi's worker processes.
    workers = multiprocessing.active_children()
    for pid in [*(worker.pid for worker in workers), *_children]:
        with suppress(ProcessLookupError):  # it ended and was reaped meanwhile
            os.kill(pid, signal.SIGTERM)
    for worker in workers:
        worker.join()
    for pid in _children:
        _reap(pid)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(INTERRUPTED)  # now: Luigi would take an exception for a failed task and run the next


def _reap(pid: int) -> None:
    """Wait for the child `pid` to end, SIGKILLing it after GRACE seconds. Not Popen.wait: the
    code this handler interrupted may be inside it, holding its lock."""
    deadline = time.monotonic() + GRACE
    with suppress(ChildProcessError):  # reaped already
        while not os.waitpid(pid, os.WNOHANG)[0]:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

"""One writer per output folder: an exclusive lock held while a task writes its folder.

Two runs started together on one work folder (two shells, two cluster jobs) would
otherwise write the same shards and checkpoints at once. The lock is flock(2) on a
`.lock` file in the folder: the kernel releases it when its holder exits or is killed,
so a crash never leaves a stale lock. It holds across machines only where the shared
file system supports flock (NFS v4 and Lustre mounted with `flock` do).
"""
from __future__ import annotations

import fcntl
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK = ".lock"
log = logging.getLogger(__name__)


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold the folder's lock for the block; wait, saying for whom, while another process holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            log.warning("waiting for %s: %s is writing it", folder, f.read().strip() or "another process")
            fcntl.flock(f, fcntl.LOCK_EX)
        f.truncate(0)
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)

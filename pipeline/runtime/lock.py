"""Exclusive locks on files: one writer per output folder, one task per GPU.

Two runs started together on one work folder (two shells, two cluster jobs) would
otherwise write the same shards and checkpoints at once. The lock is flock(2) on a
file (`.lock` in an output folder): the kernel releases it when its holder exits or is
killed, so a crash never leaves a stale lock. It holds across machines only where the
shared file system supports flock (NFS v4 and Lustre mounted with `flock` do).
"""
from __future__ import annotations

import fcntl
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

LOCK = ".lock"
log = logging.getLogger(__name__)


def try_lock(path: Path, owner: str = "", wait: bool = False) -> TextIO | None:
    """Take path's lock and write who holds it there; returns the open file that holds the
    lock, or None when another process holds it and `wait` is false."""
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        f.close()
        return None
    f.truncate(0)
    f.write(f"pid {os.getpid()} on {socket.gethostname()}{f' ({owner})' if owner else ''}\n")
    f.flush()
    return f


def holder(path: Path) -> str:
    """Who holds path's lock, as its holder wrote it."""
    try:
        return path.read_text().strip() or "another process"
    except FileNotFoundError:
        return "nobody"


@contextmanager
def holding(f: TextIO) -> Iterator[None]:
    """Release a lock from try_lock when the block ends."""
    try:
        yield
    finally:
        f.truncate(0)
        f.close()


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold the folder's lock for the block; wait, saying for whom, while another process holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    f = try_lock(path)
    if f is None:
        log.warning("waiting for %s: %s is writing it", folder, holder(path))
        f = try_lock(path, wait=True)
    with holding(f):
        yield

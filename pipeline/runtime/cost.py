"""What a piece of work cost, kept beside its output: wall seconds and peak resident memory."""
from __future__ import annotations

import resource
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from cache.storage.files import atomic_write_json


@contextmanager
def recorded_cost(path: Path, **fields) -> Iterator[None]:
    """Write `path` (JSON) when the block ends without an exception: `fields`, wall seconds,
    CPU seconds (this process's and its waited-for children's: what a shared or paused machine
    does not inflate), this process's resident MB at the start and at its peak during the block
    (its high-water mark is reset first, on Linux) and the largest peak of any child process
    this process has waited for (read processes, dask workers, torchrun), which is the block's
    own where the process ran only this block (Luigi with --workers above 1 runs each task in a
    process of its own)."""
    _reset_peak()
    start_mb = _peak_mb(resource.RUSAGE_SELF)  # the resident MB now, once the peak is reset
    started, tic, cpu = datetime.now(timezone.utc), time.perf_counter(), _cpu_seconds()
    yield
    seconds = time.perf_counter() - tic
    atomic_write_json(path, {**fields, "seconds": round(seconds, 3), "cpu_seconds": round(_cpu_seconds() - cpu, 3),
                             "start_rss_mb": start_mb, "peak_rss_mb": _peak_mb(resource.RUSAGE_SELF),
                             "children_peak_rss_mb": _peak_mb(resource.RUSAGE_CHILDREN),
                             "started": started.isoformat(timespec="seconds"), "host": socket.gethostname()},
                      indent=1)


def _reset_peak() -> None:
    try:  # "5" resets the peak RSS (VmHWM, ru_maxrss) since Linux 4.0
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # elsewhere the peak is the process's so far
        pass


def _cpu_seconds() -> float:
    return sum(usage.ru_utime + usage.ru_stime
               for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


def _peak_mb(who: int) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)  # KiB on Linux

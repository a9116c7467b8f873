"""What a piece of work cost, kept beside its output: wall and CPU seconds and peak resident
memory, over every run it took."""
from __future__ import annotations

import json
import resource
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from cache.storage.files import atomic_write_json

EVERY = 60.0  # seconds between the records a run leaves in case it is stopped


@contextmanager
def recorded_cost(path: Path, every: float = EVERY, **fields) -> Iterator[None]:
    """Write `path` (JSON) when the block ends without an exception: `fields`, wall seconds,
    CPU seconds (this process's and its waited-for children's: what a shared or paused machine
    does not inflate), this process's resident MB at the start and at its peak during the block
    (its high-water mark is reset first, on Linux) and the largest peak of any child process
    this process has waited for (read processes, dask workers, torchrun), which is the block's
    own where the process ran only this block (Luigi with --workers above 1 runs each task in a
    process of its own).

    Work resumed after a stop costs every run it took: a run records its totals so far in
    `<path stem>-so-far.json` every `every` seconds, and the run that finishes adds them to its own
    (`runs` counts them; the seconds of a stopped run's last `every` are not seen)."""
    partial = path.with_name(f"{path.stem}-so-far.json")  # not *.partial: zarr's unfinished writes
    earlier = json.loads(partial.read_text()) if partial.exists() else {}
    reset_peak()
    start_mb = _peak_mb(resource.RUSAGE_SELF)  # the resident MB now, once the peak is reset
    started, tic, cpu = datetime.now(timezone.utc), time.perf_counter(), _cpu_seconds()

    def totals() -> dict:
        peaks = {"start_rss_mb": start_mb, "peak_rss_mb": _peak_mb(resource.RUSAGE_SELF)}
        if earlier.get("peak_rss_mb", 0) > peaks["peak_rss_mb"]:
            peaks = {key: earlier[key] for key in peaks}  # the run that rose highest, with its start
        children = max(earlier.get("children_peak_rss_mb", 0), _peak_mb(resource.RUSAGE_CHILDREN))
        return {**fields, "seconds": round(earlier.get("seconds", 0) + time.perf_counter() - tic, 3),
                "cpu_seconds": round(earlier.get("cpu_seconds", 0) + _cpu_seconds() - cpu, 3), **peaks,
                "children_peak_rss_mb": children, "runs": earlier.get("runs", 0) + 1,
                "started": earlier.get("started", started.isoformat(timespec="seconds")), "host": socket.gethostname()}

    stop = threading.Event()

    def keep() -> None:
        while not stop.wait(every):
            try:
                atomic_write_json(partial, totals(), indent=1)
            except OSError:  # e.g. a full disk: a record missed costs only its minute
                pass

    keeper = threading.Thread(target=keep, name="cost record", daemon=True)
    keeper.start()
    failed = True  # by an exception; a SIGTERM ends the process at once, leaving the last record
    try:
        yield
        failed = False
    finally:
        stop.set()
        keeper.join()
        atomic_write_json(partial if failed else path, totals(), indent=1)
    partial.unlink(missing_ok=True)


def reset_peak() -> None:
    """This process's peak resident memory (VmHWM, ru_maxrss) counts from now."""
    try:  # "5" resets the peak RSS (VmHWM, ru_maxrss) since Linux 4.0
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # elsewhere the peak is the process's so far
        pass


def _cpu_seconds() -> float:
    return sum(usage.ru_utime + usage.ru_stime
               for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


def _peak_mb(who: int) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)  # KiB on Linux

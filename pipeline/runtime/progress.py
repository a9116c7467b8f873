"""Progress reporting: a callback (e.g. Luigi's status) plus a bar on an interactive
terminal, or, when the output is not a terminal (nohup, SLURM, a log file), log lines."""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from tqdm import tqdm

Callback = Callable[[int, int, str], None]


class Progress:
    """Counts `done` of `total` steps, showing a tqdm bar (only on a terminal) and
    passing each update to `callback(done, total, text)`.

    Off a terminal, updates go to `log` as INFO lines with the rate and the time left,
    at most one per `every` seconds besides the first and the last. The first update is
    where the rate is measured from, so a task reports its starting point first (0, or
    the epoch it resumes after)."""

    def __init__(self, total: int, text: str, callback: Callback | None = None,
                 log: logging.Logger | None = None, every: float = 10.0):
        self.total, self.text, self.callback = total, text, callback
        self.bar = tqdm(total=total, desc=text, disable=None, leave=False)
        self.log = log if self.bar.disable else None
        self.every = every
        self.start: tuple[float, int, int] | None = None  # (time, done, rows) of the first update
        self.logged = -math.inf

    def __call__(self, done: int, total: int | None = None, note: str = "", rows: int | None = None) -> None:
        """`rows`: images handled so far, if the caller counts them (shown as images/s)."""
        if total:
            self.total = self.bar.total = total
        self.bar.update(done - self.bar.n)
        if note:
            self.bar.set_postfix_str(note)
        if self.callback:
            self.callback(done, self.total, f"{self.text}: {done}/{self.total} {note}".strip())
        if self.log:
            self._log(done, note, rows)

    def _log(self, done: int, note: str, rows: int | None) -> None:
        now = time.monotonic()
        if self.start is None:
            self.start = (now, done, rows or 0)
        elif done < self.total and now - self.logged < self.every:
            return
        self.logged = now
        line = f"{self.text}: {done}/{self.total}" + (f" ({note})" if note else "")
        seconds, steps = now - self.start[0], done - self.start[1]
        if rows is not None and seconds > 0:
            line += f", {(rows - self.start[2]) / seconds:.0f} images/s"
        if steps > 0:
            line += f", ETA {duration(seconds / steps * (self.total - done))}"
        self.log.info(line)

    def close(self) -> None:
        self.bar.close()


def duration(seconds: float) -> str:
    """3 s, 2 min 05 s, 1 h 07 min."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"

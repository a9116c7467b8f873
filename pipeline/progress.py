"""Progress reporting: a callback (e.g. Luigi's status) plus a bar on an interactive terminal."""
from __future__ import annotations

from collections.abc import Callable

from tqdm import tqdm

Callback = Callable[[int, int, str], None]


class Progress:
    """Counts `done` of `total` steps, showing a tqdm bar (only on a terminal) and
    passing each update to `callback(done, total, text)`."""

    def __init__(self, total: int, text: str, callback: Callback | None = None):
        self.total, self.text, self.callback = total, text, callback
        self.bar = tqdm(total=total, desc=text, disable=None, leave=False)

    def __call__(self, done: int, total: int | None = None, note: str = "") -> None:
        if total:
            self.total = self.bar.total = total
        self.bar.update(done - self.bar.n)
        if note:
            self.bar.set_postfix_str(note)
        if self.callback:
            self.callback(done, self.total, f"{self.text}: {done}/{self.total} {note}".strip())

    def close(self) -> None:
        self.bar.close()

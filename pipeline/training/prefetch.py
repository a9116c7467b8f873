"""Overlap producing items with consuming them: a background thread keeps a few ready."""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")


def prefetch(batches: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Build the next batches on a background thread while the model works on this one
    (reading, rendering and gathers release the GIL)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def fill() -> None:
        try:
            for batch in batches:
                q.put(batch)
            q.put(done)
        except BaseException as err:  # noqa: BLE001 (re-raised in the consumer)
            q.put(err)

    threading.Thread(target=fill, daemon=True).start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item

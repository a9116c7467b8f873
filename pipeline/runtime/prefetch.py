"""Overlap producing items with consuming them: a background thread keeps a few ready
(`prefetch`), or consumes them as they come (`consume_in_background`); an executor's
workers make a few ahead (`ahead`)."""
from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, wait
from typing import TypeVar

T = TypeVar("T")


def prefetch(batches: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Build the next batches on a background thread while the model works on this one
    (reading, rendering and gathers release the GIL). An error on the thread is raised
    here, the same exception object. A consumer that stops early (closes this generator)
    stops the thread after the batch it is building, so it holds no batch afterwards."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done, stop = object(), threading.Event()

    def fill() -> None:
        try:
            for batch in batches:
                q.put(batch)
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as err:  # noqa: BLE001 (re-raised in the consumer)
            q.put(err)

    thread = threading.Thread(target=fill, daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # take what it puts until it sees the stop
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass


def consume_in_background(items: Iterable[T], consume: Callable[[T], None], depth: int = 2) -> None:
    """consume(item) for every item, in order, on a background thread, while this thread
    produces the next ones (at most `depth` wait between the two); returns once every item
    is consumed. An error on either side stops both and is raised here, the same exception
    object: the producer's once the consumer has done the items already handed over, the
    consumer's as soon as the producer sees it, before it makes another item."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    failed: list[BaseException] = []

    def drain() -> None:
        try:
            while (item := q.get()) is not done:
                consume(item)
        except BaseException as err:  # noqa: BLE001 (re-raised in the producer)
            failed.append(err)
            while q.get() is not done:  # unblock the producer until it stops
                pass

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    try:
        for item in items:
            if failed:
                break
            q.put(item)
    finally:
        q.put(done)
        thread.join()
    if failed:
        raise failed[0]


def ahead(executor: Executor, fn: Callable[..., T], calls: Iterable[tuple], depth: int) -> Iterator[T]:
    """fn(*args) for each `args` of `calls`, run by `executor`, the results in order: `depth`
    calls beyond the one awaited are under way (executor.map would submit them all, and hold
    every result). An error is raised here, for its call's turn; a consumer that stops early
    cancels the calls not yet started and waits for those under way, so that none is left
    working for nobody beside what comes next."""
    pending: deque[Future] = deque()
    try:
        for args in calls:
            pending.append(executor.submit(fn, *args))
            if len(pending) > depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        wait(pending)

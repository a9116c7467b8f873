"""The threads that overlap the teacher pass's stages (and the training loader's reads):
items keep their order, an error on either side reaches the caller as raised, and no
thread is left behind."""
from __future__ import annotations

import itertools
import threading

import pytest

from pipeline.runtime.prefetch import consume_in_background, prefetch


def broken(after: int, message: str):
    """0, 1, ... after - 1, then a ValueError(message)."""
    yield from range(after)
    raise ValueError(message)


def test_prefetch_keeps_the_order_and_raises_the_producer_s_error_as_raised():
    got = []
    with pytest.raises(ValueError, match="^shard 3 is damaged$"):
        for item in prefetch(broken(5, "shard 3 is damaged")):
            got.append(item)
    assert got == list(range(5))


def test_prefetch_closed_early_stops_its_thread():
    before = threading.active_count()
    batches = prefetch(itertools.count(), depth=2)
    assert [next(batches) for _ in range(3)] == [0, 1, 2]
    batches.close()
    assert threading.active_count() == before


def test_consume_in_background_consumes_every_item_in_order():
    got = []
    consume_in_background(range(100), got.append, depth=3)
    assert got == list(range(100))


def test_consume_in_background_raises_the_consumer_s_error_and_stops_the_producer():
    produced = []

    def items():
        for i in itertools.count():  # endless: only the consumer's error stops it
            produced.append(i)
            yield i

    def consume(item: int) -> None:
        if item == 4:
            raise OSError("disk full writing eval/logits")

    before = threading.active_count()
    with pytest.raises(OSError, match="^disk full writing eval/logits$"):
        consume_in_background(items(), consume, depth=2)
    assert len(produced) < 20
    assert threading.active_count() == before


def test_consume_in_background_raises_the_producer_s_error_after_consuming_what_came_before():
    got = []
    with pytest.raises(ValueError, match="^no such row$"):
        consume_in_background(broken(3, "no such row"), got.append)
    assert got == [0, 1, 2]

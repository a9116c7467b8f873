"""`ahead`, how the loader's read processes make windows: results in order, a few calls under
way beyond the one awaited, an error raised in its call's turn, and nothing left working
once the consumer stops."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipeline.runtime.prefetch import ahead


def test_ahead_keeps_the_order_with_depth_calls_under_way_beyond_the_one_awaited():
    started: list[int] = []

    def square(x: int) -> int:
        started.append(x)
        time.sleep(0.01 * (5 - x % 5))  # later calls finish first
        return x * x

    with ThreadPoolExecutor(4) as pool:
        results = ahead(pool, square, [(x,) for x in range(10)], depth=2)
        assert next(results) == 0
        assert len(started) <= 3  # the one awaited and 2 beyond: the rest wait for the consumer
        assert list(results) == [x * x for x in range(1, 10)]


def test_ahead_raises_in_turn_and_leaves_nothing_working_when_stopped():
    finished = threading.Event()

    def call(x: int) -> int:
        if x == 1:
            raise ValueError("window 1 is damaged")
        if x == 2:
            time.sleep(0.2)
            finished.set()
        return x

    with ThreadPoolExecutor(2) as pool:
        results = ahead(pool, call, [(x,) for x in range(6)], depth=2)
        assert next(results) == 0
        with pytest.raises(ValueError, match="window 1 is damaged"):
            next(results)
        assert finished.is_set()  # call 2, under way, was waited for

"""A task's cost record: what every run of the work took, a stopped run's share included."""
from __future__ import annotations

import json
import time

import pytest

from pipeline.runtime.cost import recorded_cost


def busy(seconds: float) -> None:
    """Spend `seconds` of both wall and CPU time: the recorder's thread counts in the
    process's CPU time too, so CPU alone could pass in less wall time."""
    wall, cpu = time.perf_counter() + seconds, time.process_time() + seconds
    while time.perf_counter() < wall or time.process_time() < cpu:
        pass


def test_resumed_work_costs_every_run_it_took(tmp_path):
    path, partial = tmp_path / "cost.json", tmp_path / "cost-so-far.json"
    with pytest.raises(RuntimeError):
        with recorded_cost(path, every=0.02, task="t"):
            busy(0.2)
            kept = json.loads(partial.read_text())  # what a run killed now would leave
            assert kept["runs"] == 1 and kept["seconds"] > 0.05 and kept["task"] == "t"
            raise RuntimeError("stopped")
    first = json.loads(partial.read_text())
    assert not path.exists() and first["runs"] == 1 and first["cpu_seconds"] >= 0.2
    with recorded_cost(path, every=0.02, task="t"):
        busy(0.2)
    cost = json.loads(path.read_text())
    assert cost["runs"] == 2 and cost["started"] == first["started"] and not partial.exists()
    rounding = 0.002  # the records keep milliseconds
    assert cost["seconds"] >= first["seconds"] + 0.2 - rounding
    assert cost["cpu_seconds"] >= first["cpu_seconds"] + 0.2 - rounding
    assert cost["peak_rss_mb"] >= cost["start_rss_mb"] > 0

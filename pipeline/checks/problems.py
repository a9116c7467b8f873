"""What every check of the configuration reports, and the rule a number must keep: a
Problem names its section, key, value and fix; a Range bounds a setting's values."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One mistake of the configuration: where it is and how to fix it."""
    section: str
    key: str
    value: Any
    fix: str

    def __str__(self) -> str:
        return f"[{self.section}] {self.key} = {self.value}: {self.fix}"


@dataclass(frozen=True)
class Range:
    """low <= value <= high, or < where open."""
    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:  # NaN holds nowhere
        return ((value > self.low if self.low_open else value >= self.low)
                and (value < self.high if self.high_open else value <= self.high))

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


def attempt(section: str, key: str, value: Any, action, *args) -> tuple[Any, list[Problem]]:
    """(action(*args), []) if it succeeds, else (None, [the one problem it raised])."""
    try:
        return action(*args), []
    except Exception as error:  # noqa: BLE001 (whatever fails here would fail the task later)
        return None, [Problem(section, key, value, f"{type(error).__name__}: {error}")]


def failure(section: str, key: str, value: Any, action, *args) -> list[Problem]:
    """[] if action(*args) succeeds, else the one problem it raised."""
    return attempt(section, key, value, action, *args)[1]

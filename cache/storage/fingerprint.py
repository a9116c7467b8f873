"""Stable content digests, the project's one way of hashing: what a task's output depends
on (settings, a data set's file listing, a weights file) reduced to a SHA-256 hex string."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def _canonical(parts: Any) -> bytes:
    """JSON with keys sorted, so dict order never matters."""
    return json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()


def digest(*parts: Any) -> str:
    """SHA-256 of the canonical JSON of `parts`."""
    return hashlib.sha256(_canonical(parts)).hexdigest()


def digest_lines(head: Any, lines: Iterable[str]) -> str:
    """SHA-256 of the canonical JSON of `head`, then of each line, streamed: a listing of a
    million files is never held in memory."""
    h = hashlib.sha256(_canonical(head))
    for line in lines:
        h.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def changed_settings(values: dict, before: dict) -> dict:
    """The items of `values` that differ from `before`'s (keys `before` lacks are kept), in
    their order. With `before` the value a setting had in effect before it could be chosen,
    a setting added later joins a fingerprint only once changed: what was made before it
    existed keeps its fingerprint, and is found again rather than rebuilt."""
    return {key: value for key, value in values.items() if key not in before or before[key] != value}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

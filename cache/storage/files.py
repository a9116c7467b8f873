"""Files written whole or not at all: every output of the project is written to a
temporary sibling and renamed into place, so a reader (or Luigi's complete()) never sees
half a file and a killed writer leaves nothing but a dot-file."""
from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A fresh temporary sibling of `path` to write; renamed onto `path` when the block
    ends, removed if it raises. It keeps `path`'s suffix, for writers that go by it
    (matplotlib's savefig, np.save)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, value: Any, **dumps: Any) -> None:
    """`value` as JSON (json.dumps keyword arguments in `dumps`), written atomically."""
    atomic_write_text(path, json.dumps(value, **dumps))


def probe_writable(folder: str | Path) -> None:
    """Raise OSError, naming the path that stops it, unless `folder` can be written: an entry
    made in it or, where it does not exist yet, the folders up to it. Tried with a uniquely
    named temporary folder in it or in its deepest existing parent, removed at once: the check
    leaves no trace and cannot trip another run checking the same folder at the same time."""
    folder = Path(folder).absolute()
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    try:
        with tempfile.TemporaryDirectory(prefix=".write-check-", dir=existing):
            pass
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(existing)) from None

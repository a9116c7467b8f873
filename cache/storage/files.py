"""Files written whole or not at all: every output of the project is written to a
temporary sibling and renamed into place, so a reader (or Luigi's complete()) never sees
half a file and a killed writer leaves nothing but a dot-file. A write that finds the disk
full raises NoSpace, which says so and names the file: the OS's own error names neither."""
from __future__ import annotations

import errno
import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


class NoSpace(OSError):
    """ENOSPC in words a user can act on: which file, how much room is left and where."""

    def __str__(self) -> str:
        return self.strerror


def no_space(path: str | Path, needed: int | None = None) -> NoSpace:
    """NoSpace for a write to `path` of `needed` bytes (None: not known)."""
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    mount = next(p for p in (existing, *existing.parents) if p.is_mount())
    need = "" if needed is None else f"; this write needed {needed:,} bytes"
    return NoSpace(errno.ENOSPC, f"no space left on device: {path} ({shutil.disk_usage(existing).free:,} bytes "
                                 f"free on {mount}{need}). Free space there, or point luigi.cfg's [paths] work at "
                                 "a disk with room, then rerun: finished blocks and epochs are kept", str(path))


@contextmanager
def naming_full_disk(path: str | Path, needed: int | None = None) -> Iterator[None]:
    """Within the block, a write that finds the disk full (ENOSPC anywhere in the chain of
    the error it raises) raises NoSpace naming `path`, the file or folder the block writes."""
    try:
        yield
    except Exception as error:
        full = next((e for e in _chain(error) if isinstance(e, OSError) and e.errno == errno.ENOSPC), None)
        if full is None or isinstance(full, NoSpace):
            raise
        raise no_space(path, needed) from error


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    """`error` and the errors it was raised from or while handling."""
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


@contextmanager
def atomic_path(path: str | Path, size: int | None = None) -> Iterator[Path]:
    """A fresh temporary sibling of `path` to write; renamed onto `path` when the block
    ends, removed if it raises. It keeps `path`'s suffix, for writers that go by it
    (matplotlib's savefig). A full disk raises NoSpace naming `path` (and `size`, the
    bytes the block writes, where the caller knows them)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    with naming_full_disk(path, size):  # outside: the room it reports is with the partial file gone
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    """`data` written atomically. Writers that write files themselves in C (torch.save,
    safetensors, np.save) lose the errno of a full disk; serialised to memory first and
    written here, their files fail as NoSpace with the bytes needed."""
    with atomic_path(path, len(data)) as tmp:
        tmp.write_bytes(data)


def atomic_write_with(path: str | Path, write: Callable[[BinaryIO], Any]) -> None:
    """What `write(file)` writes (torch.save, np.save), written atomically by way of memory."""
    buffer = io.BytesIO()
    write(buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


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

"""A full disk: every write the project makes that finds no room raises "no space left on
device" naming the file (or the task's folder) and the room left, leaves no temporary file,
and a rerun once there is room finishes as if nothing had happened.

The full disk is a fake at the last Python step of a binary write, `Path.open(..., "wb")`:
the file it opens takes half of a write's bytes, then fails as the OS does (ENOSPC, no path)."""
from __future__ import annotations

import errno
import fnmatch
import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import zarr
from support.build import build

from cache.storage.files import NoSpace
from models.checkpoint import read_state, save_weights
from pipeline.training.train import save_state
from tasks.data import PrepareDataset


class FullFile:
    """An open file on a full disk: a write gets half its bytes in, then raises ENOSPC."""

    def __init__(self, file):
        self.file = file

    def __enter__(self) -> FullFile:
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.file.write(view[:len(view) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def full_disk(monkeypatch):
    """Fill the disk for binary writes to files whose path matches a glob; returns the undo."""
    real_open = Path.open

    def fill(pattern: str = "*"):
        def open_(self, mode="r", *args, **kwargs):
            file = real_open(self, mode, *args, **kwargs)
            return FullFile(file) if "w" in mode and fnmatch.fnmatch(str(self), pattern) else file
        monkeypatch.setattr(Path, "open", open_)
        return monkeypatch.undo
    return fill


def no_space_at(path: Path) -> str:
    """The start of the error for a write to `path`, as a pattern."""
    return rf"no space left on device: {re.escape(str(path))} \([\d,]+ bytes free on /"


def leftovers(folder: Path) -> list[str]:
    """Temporary files of atomic writes (ours: .<name>.<id>.tmp<suffix>, zarr's: *.partial)."""
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name or p.suffix == ".partial"]


def test_a_checkpoint_on_a_full_disk_is_named_with_its_size_and_leaves_nothing(tmp_path, full_disk):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    run = SimpleNamespace(net=net, loss_fn=torch.nn.Identity(), opt=opt,
                          scaler=torch.amp.GradScaler("cpu", enabled=False))
    path, history = tmp_path / "run" / "state.pt", [{"epoch": 1}]
    room = full_disk()
    with pytest.raises(NoSpace, match=no_space_at(path) + r".*this write needed [\d,]+ bytes\).*rerun"):
        save_state(path, run, history)
    assert leftovers(tmp_path) == [] and not path.exists()
    room()
    save_state(path, run, history)
    assert torch.equal(torch.load(path, weights_only=True)["net"]["weight"], net.weight)


def test_weights_on_a_full_disk_are_named_and_leave_nothing(tmp_path, full_disk):
    net, path = torch.nn.Linear(3, 2), tmp_path / "weights.safetensors"
    room = full_disk()
    with pytest.raises(NoSpace, match=no_space_at(path) + ".*this write needed"):
        save_weights(net, path)
    assert leftovers(tmp_path) == [] and not path.exists()
    room()
    save_weights(net, path)
    assert torch.equal(read_state(path)["weight"], net.weight)


def test_a_store_build_on_a_full_disk_names_its_folder_and_a_rerun_with_room_matches(luigi_config, full_disk):
    assert build(PrepareDataset("demo"))[0]
    task = PrepareDataset("demo")
    clean = zarr.open_group(task.store_path(), mode="r")["images"][:]
    luigi_config("paths", "work", str(luigi_config.work.with_name("full")))
    task = PrepareDataset("demo")
    task.set_progress_percentage = task.set_status_message = lambda value: None  # what Luigi's worker sets
    room = full_disk("*/images/c/*.partial")  # the shards of images: metadata and settings.json get in
    with pytest.raises(NoSpace, match=no_space_at(task.folder())):
        task.run()
    assert leftovers(task.folder()) == [] and not task.complete()
    room()
    assert build(PrepareDataset("demo"))[0]
    np.testing.assert_array_equal(zarr.open_group(task.store_path(), mode="r")["images"][:], clean)

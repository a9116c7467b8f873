"""Shared fixtures: a tiny experiment (small images, tiny models, two epochs) laid over
the shipped luigi.cfg, the home of every default, for the duration of a test."""
from __future__ import annotations

import configparser
from pathlib import Path

import h5py
import luigi
import numpy as np
import pytest
import torch
from luigi.configuration import add_config_path, get_config
from luigi.task_register import Register

from tasks.config import SECTIONS

torch.set_num_threads(2)
SHIPPED = Path(__file__).resolve().parents[1] / "luigi.cfg"
add_config_path(str(SHIPPED))  # the defaults, wherever pytest is started from
WHOLE = ("datasets", "students")  # the tiny experiment's own lists replace these sections whole

TINY_VIT = "vit_tiny_patch16_224 img_size=32 patch_size=8 embed_dim=32 depth=1 num_heads=2"
TINY_CONVIT = "convit_tiny img_size=32 patch_size=8 embed_dim=16 depth=1 num_heads=2 local_up_to_layer=1"


def shipped_settings() -> dict[str, dict[str, str]]:
    """The shipped luigi.cfg as section -> key -> value."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(SHIPPED)
    return {section: dict(parser[section]) for section in parser.sections()}


def tiny_settings(work: str) -> dict:
    """The defaults of the shipped luigi.cfg (its sections of settings, not Luigi's own
    [core], [retcode] or [resources]) with the tiny experiment's values in their place."""
    shipped = shipped_settings()
    settings = {section.__name__: shipped[section.__name__] for section in SECTIONS}
    for section, values in _tiny(work).items():
        settings[section] = values if section in WHOLE else {**settings.get(section, {}), **values}
    return settings


def _tiny(work: str) -> dict:
    return {
        # Luigi's own lock refuses a command line already running on this host: the tests'
        # runs must not collide with a user's `luigi --module tasks RunAll` (or each other's).
        "core": {"local_scheduler": "true", "log_level": "WARNING", "lock_pid_dir": f"{work}-luigi-pids"},
        "paths": {"work": work},
        "datasets": {"demo": "synthetic seed=0 train_per_class=12 test_per_class=6 size=32"},
        "data": {"store_size": "32", "val_fraction": "0.1", "seed": "0"},
        "compute": {"scheduler": "synchronous", "workers": "1", "threads": "2", "shard_rows": "32"},
        "teacher": {"model": "convnext_atto", "init": "scratch", "checkpoint": "", "epochs": "2",
                    "lr": "0.002", "views": "2", "seed": "0"},
        "students": {"vit": TINY_VIT},
        "train": {"epochs": "2", "batch_size": "16", "image_size": "32", "seed": "0", "lr": "0.001"},
        "kd": {"alpha": "0.7", "temperature": "4"},
        "cache_study": {"caches": "", "students": "vit"},  # off until a test lists caches
    }


@pytest.fixture
def luigi_config(tmp_path):
    """Install a tiny experiment as Luigi's configuration; returns a function that
    changes values (section, key, value) between builds."""
    config = get_config()

    def replace(settings: dict) -> None:
        for section in config.sections():
            config.remove_section(section)
        config.read_dict(settings)
        Register.clear_instance_cache()

    def set_value(section: str, key: str, value: str) -> None:
        if not config.has_section(section):
            config.add_section(section)
        config.set(section, key, value)
        Register.clear_instance_cache()

    replace(tiny_settings(str(tmp_path / "work")))
    set_value.work = tmp_path / "work"
    yield set_value
    replace({})
    config.reload()


_RAN: list[luigi.Task] = []
luigi.Task.event_handler(luigi.Event.SUCCESS)(_RAN.append)


def build(*tasks: luigi.Task) -> tuple[bool, list[luigi.Task]]:
    """Build with the local scheduler and one worker; return (success, the tasks that ran)."""
    _RAN.clear()
    Register.clear_instance_cache()
    result = luigi.build(list(tasks), local_scheduler=True, workers=1, detailed_summary=True,
                         log_level="WARNING")
    return result.status.name.startswith("SUCCESS"), list(_RAN)


def write_h5(path: Path, n: int = 6, labels=None, split=None, images=None, **attrs) -> Path:
    """An HDF5 data set: n tiny images, labels 0, 1, 2, 0, ... unless given, `split` if given,
    and `attrs` (e.g. class_names) on the file."""
    with h5py.File(path, "w") as f:
        if images is None:
            images = np.arange(n * 4 * 5 * 3, dtype=np.uint8).reshape(n, 4, 5, 3)
        f["images"] = images
        f["labels"] = labels if labels is not None else np.arange(n) % 3
        if split is not None:
            f["split"] = split
        f.attrs.update(attrs)
    return path


TEACHER = "convnext_atto"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A tiny image store and a teacher cache with 2 views, made without Luigi.
    The teacher is randomly initialised: these tests check plumbing, not accuracy."""
    import models
    from pipeline.data.imagestore import ImageStore, write_image_store
    from pipeline.data.readers import carve_validation
    from pipeline.data.synthetic import SyntheticSource
    from pipeline.teacher.teacher_pass import TeacherJob, cache_teacher

    root = tmp_path_factory.mktemp("tiny")
    source = SyntheticSource(seed=1, train_per_class=6, test_per_class=2, size=32)
    items = carve_validation(source.items(), 0.2, 0)
    write_image_store(source, items, root / "store.zarr", 32, {}, scheduler="synchronous", shard_rows=16)
    store = ImageStore(root / "store.zarr")
    torch.manual_seed(0)
    teacher = models.create(TEACHER, len(store.classes))
    models.save_weights(teacher, root / "teacher.safetensors")
    job = TeacherJob(str(root / "store.zarr"), str(root / "cache.zarr"), TEACHER, "{}",
                     str(root / "teacher.safetensors"), len(store.classes), 32, 2, 0, 16)
    identity = {"teacher": TEACHER, "views": 2, "seed": 0, "image_size": 32}
    cache_teacher(job, store.rows("train"), len(store.labels), teacher.num_features,
                  {"identity": identity}, "synchronous", 1, 16)
    return {"root": root, "store": root / "store.zarr", "cache": root / "cache.zarr",
            "weights": root / "teacher.safetensors", "job": job, "identity": identity}

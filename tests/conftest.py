"""The fixtures: a tiny experiment installed as Luigi's configuration, and a tiny image store
and teacher cache. What tests import besides fixtures lives in tests/support/."""
from __future__ import annotations

import os

import pytest
import torch
from luigi.configuration import add_config_path, get_config
from luigi.task_register import Register
from support.config import SHIPPED, TEACHER, tiny_settings

torch.set_num_threads(2)
add_config_path(str(SHIPPED))  # the defaults, wherever pytest is started from
THREADS, ENVIRON = torch.get_num_threads(), dict(os.environ)


@pytest.fixture(autouse=True)
def process_state():
    """Every test starts with the suite's torch threads and environment: a teacher pass run in
    the test's process sets its own threads, and dask's workers set OMP_NUM_THREADS=1 in
    os.environ, which the ranks a later test starts would inherit; a test comparing an
    in-process run with a fresh process's (tests/test_ddp.py) would then see float sums in
    another order."""
    yield
    torch.set_num_threads(THREADS)
    for key in set(os.environ) - set(ENVIRON) - {"PYTEST_CURRENT_TEST"}:  # pytest's own, it removes
        del os.environ[key]
    os.environ.update(ENVIRON)


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

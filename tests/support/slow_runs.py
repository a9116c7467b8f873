"""A small image store and teacher cache, written the same way by tests/test_store.py and by
the subprocess it kills midway:

    python tests/support/slow_runs.py store OUT [JPEG_QUALITY]   OUT = the store folder (raw, or jpeg)
    python tests/support/slow_runs.py cache STORE WEIGHTS OUT [TOPK FEATURE_DTYPE]  OUT = the cache folder

The subprocess sleeps in every image (or block) so that a kill lands between blocks, and
times the teacher pass with a stopwatch beside the cache;
in tests/test_dask_cluster.py a dask worker kills itself during the same pass.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import models
from cache.schema import LogitCoding
from cache.storage import blocks
from pipeline.data.imagestore import ImageStore, write_image_store
from pipeline.data.synthetic import CLASSES, SyntheticSource
from pipeline.spec import parse_cache
from pipeline.teacher.teacher_pass import TeacherJob, cache_teacher

SOURCE_ARGS = {"seed": 0, "train_per_class": 4, "test_per_class": 2, "size": 24}  # 48 images
SOURCE = SyntheticSource(**SOURCE_ARGS)
SIZE = 20  # smaller than the source's images, so the store really resizes
SHARD_ROWS = 8
TEACHER = "convnext_atto"


@dataclass
class SlowSource(SyntheticSource):
    delay: float = 0.05

    def load(self, item):
        time.sleep(self.delay)
        return super().load(item)


@dataclass(frozen=True)
class SlowTeacherJob(TeacherJob):
    delay: float = 0.3

    def __call__(self, block: tuple) -> None:
        time.sleep(self.delay)
        super().__call__(block)


@dataclass(frozen=True)
class DyingTeacherJob(TeacherJob):
    """The first process to start block `victim` writes its pid to `flag` and SIGKILLs
    itself: a dask worker dies in the middle of the teacher pass, once."""
    victim: tuple = ("aug", SHARD_ROWS, 2 * SHARD_ROWS)
    flag: str = ""

    def __call__(self, block: tuple) -> None:
        if tuple(block) == self.victim and not Path(self.flag).exists():
            Path(self.flag).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        super().__call__(block)


def write_store(out: Path, source: SyntheticSource = SOURCE, scheduler: str = "synchronous", workers: int = 1,
                progress=None, jpeg_quality: int | None = None, shard_rows: int = SHARD_ROWS,
                chunk_rows: int = 1) -> dict:
    return write_image_store(source, source.items(), out, SIZE, {"source": "synthetic"}, scheduler=scheduler,
                             workers=workers, shard_rows=shard_rows, progress=progress, jpeg_quality=jpeg_quality,
                             chunk_rows=chunk_rows)


def save_teacher(weights: Path) -> None:
    torch.manual_seed(0)
    models.save_weights(models.create(TEACHER, len(CLASSES)), weights)


def teacher_job(store: Path, weights: Path, out: Path, job: type[TeacherJob] = TeacherJob,
                **extra) -> TeacherJob:
    # Two torch threads in every process: the subprocess then computes what the test process does.
    return job(str(store), str(out), TEACHER, "{}", str(weights), len(CLASSES), image_size=32, views=2,
               seed=0, batch_size=64, threads=2, **extra)


def encoding(spec: str) -> dict:
    """TeacherJob's fields for a cache's [teacher] keys as [cache_study] writes them, e.g.
    'topk=3 feature_dtype=int8' (a tempered or sampled tail at T 4); '' = every logit, float16."""
    keys = parse_cache(spec)
    coding = LogitCoding.of(keys, 4.0)
    return {"coding": coding, "feature_dtype": keys.get("feature_dtype", "float16")}


def write_cache(job: TeacherJob, progress=None, scheduler: str = "synchronous", workers: int = 1,
                stopwatch: blocks.Stopwatch | None = None, shard_rows: int = SHARD_ROWS) -> dict:
    store = ImageStore(job.store)
    features = models.create(TEACHER, len(CLASSES)).num_features
    return cache_teacher(job, store.rows("train"), len(store.labels), features,
                         {"identity": {"teacher": TEACHER, "views": job.views}}, scheduler, workers,
                         shard_rows, progress, stopwatch=stopwatch)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_files(a: Path, b: Path) -> None:
    """Every file (array shards, metadata, manifest) byte for byte."""
    fa, fb = files(a), files(b)
    assert sorted(fa) == sorted(fb), f"{a} and {b} hold other files"
    differ = [name for name in fa if fa[name] != fb[name]]
    assert differ == [], f"these files of {a} and {b} differ: {differ}"


if __name__ == "__main__":
    kind, *paths = sys.argv[1:]
    if kind == "store":
        out, *quality = paths
        write_store(Path(out), SlowSource(**SOURCE_ARGS), jpeg_quality=int(quality[0]) if quality else None)
    else:
        store, weights, out, *spec = paths
        write_cache(teacher_job(Path(store), Path(weights), Path(out), job=SlowTeacherJob, **encoding(" ".join(spec))),
                    stopwatch=blocks.Stopwatch(out))

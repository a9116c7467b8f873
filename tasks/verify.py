"""VerifyData: read every chunk of a data set's image stores and teacher caches, and check
that each was written whole; with --teacher-sample, check its caches against the teacher."""
from __future__ import annotations

from pathlib import Path

import luigi

import models
from cache.reader import TeacherCache
from cache.storage.integrity import verify_outputs
from pipeline.data.imagestore import ImageStore
from pipeline.spec import parse_spec
from pipeline.teacher.live_check import check_cache
from tasks.config import paths, teacher
from tasks.data import PrepareDataset
from tasks.teacher import CacheTeacher, study_variants, teacher_weights


class TeacherCheckFailed(RuntimeError):
    """A cache differs from the live teacher beyond its encoding's bound."""


class VerifyData(luigi.Task):
    """Check every chunk of every finished image store and teacher cache of the data set
    against its checksum, and that its manifest records every row as written. Damage fails
    the task (non-zero exit) with a list of every damaged shard, and marks each damaged
    output unfinished, so the next run rebuilds it. With `teacher_sample` N, each finished
    cache of the configuration (the main one and the [cache_study]'s) has N of its views
    rendered again and run through the teacher: a difference of log-probabilities or of
    features beyond its encoding's bound fails the task, naming the view."""

    dataset = luigi.Parameter(description="a name from luigi.cfg's [datasets] section")
    teacher_sample = luigi.IntParameter(default=0, description="cached views to check against the live teacher "
                                                               "in each cache (half eval views); 0 = none")

    def complete(self) -> bool:
        return False  # a check, not an output: it runs whenever asked

    def run(self) -> None:
        for root in verify_outputs(Path(paths().work) / self.dataset):
            print(f"verified: {root}")
        if self.teacher_sample > 0:
            self.check_teacher()

    def check_teacher(self) -> None:
        """Each finished cache against the teacher whose weights it was made from; raises
        TeacherCheckFailed naming every output beyond its bound."""
        store = ImageStore(PrepareDataset(self.dataset).store_path())
        name, kwargs = parse_spec(teacher().model)
        net = models.load_weights(models.create(name, len(store.classes), **kwargs),
                                  teacher_weights(self.dataset).output().path)
        failed = []
        for task in (CacheTeacher(self.dataset, variant) for variant in dict.fromkeys(["", *study_variants()])):
            if not task.complete():
                continue
            for found in check_cache(TeacherCache(task.cache_path()), store, net, self.teacher_sample,
                                     task.precision().name):
                line = (f"{task.cache_path()}: {found.what}: largest difference {found.largest:.4g} (bound "
                        f"{found.bound:.4g}) at {found.view}: {'within' if found.within else 'BEYOND its bound'}")
                print(f"teacher check: {line}")
                if not found.within:
                    failed.append(line)
        if failed:
            raise TeacherCheckFailed("the teacher cache differs from the live teacher:\n  " + "\n  ".join(failed) +
                                     "\nFix: delete that cache folder and rerun CacheTeacher (was it made by "
                                     "another teacher, or written by another version?)")

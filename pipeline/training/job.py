"""One training run as a job: everything a task hands the training loop, so that the same
run happens in the task's own process or, data-parallel, in every rank torchrun starts
(`python -m pipeline.training.job JOB.json`, pipeline/training/distributed.py)."""
from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import models
from cache.reader import TeacherCache
from cache.storage.files import atomic_write_json
from pipeline.data.imagestore import ImageStore
from pipeline.runtime.device import resolve_device
from pipeline.training import distributed
from pipeline.training.build import Distill, TrainSetup, build_run
from pipeline.training.settings import TrainSettings
from pipeline.training.train import fit


@dataclass(frozen=True)
class OnlineTeacher:
    """The teacher an online student distills from: a timm model (name, kwargs) and its weights file."""
    model: str
    kwargs: dict
    weights: str

    def load(self, classes: int) -> models.Net:
        """The teacher with its weights."""
        return models.load_weights(models.create(self.model, classes, **self.kwargs), self.weights)


@dataclass(frozen=True)
class TrainJob:
    """The run of `setup` on the image store `store`, into `weights`, its state and history in
    `workdir`; it distills from the teacher cache `cache` or from the online `teacher`, if
    either. Store and cache are read within `memory_budget` bytes; `device` is a [compute]
    device setting or a resolved device ("cuda" gives each rank its local GPU)."""
    setup: TrainSetup
    store: str
    workdir: str
    weights: str
    memory_budget: int
    cache: str | None = None
    teacher: OnlineTeacher | None = None
    device: str = "cpu"

    def run(self, progress: Callable[..., object] | None = None) -> list[dict]:
        """Train; rank 0 reports its progress and writes history.json and the weights. Returns the history."""
        ranks = distributed.from_env()
        device = resolve_device(self.device)
        if device.type == "cuda" and ranks.launched:
            device = torch.device("cuda", ranks.local)  # the task made its GPUs the visible ones
        if ranks.launched:
            logging.getLogger(__name__).info("rank %d of %d on %s", ranks.rank, ranks.world, device)
        with distributed.process_group(ranks, device):
            store = ImageStore(self.store, self.memory_budget)
            cache = TeacherCache(self.cache, self.memory_budget) if self.cache else None
            teacher = self.teacher.load(len(store.classes)) if self.teacher else None
            run = build_run(self.setup, store, cache, teacher, device, ranks)
            history = fit(run, Path(self.workdir), progress if ranks.main else None)
            if ranks.main:
                atomic_write_json(Path(self.workdir) / "history.json", history, indent=1)
                models.save_weights(run.net, self.weights)
        return history

    def save(self, path: Path) -> Path:
        """The job as JSON at `path`, for `load`."""
        atomic_write_json(path, asdict(self), indent=1)
        return path

    @classmethod
    def load(cls, path: Path) -> TrainJob:
        """The job `save` wrote."""
        values = json.loads(Path(path).read_text())
        setup, teacher = values.pop("setup"), values.pop("teacher")
        setup = TrainSetup(**{**setup, "settings": TrainSettings(**setup["settings"]),
                              "distill": setup["distill"] and Distill(**setup["distill"])})
        return cls(setup, teacher=teacher and OnlineTeacher(**teacher), **values)


def main(path: str) -> None:
    """A rank's entry: its epoch lines, warnings and (rank 0) progress reports go to its output,
    which torchrun gathers and the task reads (distributed.launch)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(name)s: %(message)s")
    TrainJob.load(Path(path)).run(distributed.report)


if __name__ == "__main__":
    main(sys.argv[1])

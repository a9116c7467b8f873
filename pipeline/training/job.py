"""One training run as a job: everything a task hands the training loop, so that the same
run happens in the task's own process or, data-parallel, in every rank torchrun starts
(`python -m pipeline.training.job JOB.json`, pipeline/training/distributed.py)."""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import models
from cache.reader import TeacherCache
from cache.storage.files import atomic_write_json
from pipeline.data.imagestore import ImageStore
from pipeline.runtime.device import Precision, resolve_device
from pipeline.training import distributed
from pipeline.training.settings import TrainSettings
from pipeline.training.train import fit


@dataclass(frozen=True)
class TrainJob:
    """A student (or the teacher) to train into `weights`, its state and history in `workdir`.
    `teacher`, for online distillation: {"model", "kwargs", "weights"}; `device`: a
    [compute] device setting or a resolved device ("cuda" gives each rank its local GPU)."""
    model: str
    kwargs: dict
    store: str
    settings: dict  # TrainSettings' fields
    workdir: str
    weights: str
    memory_budget: int
    cache: str | None = None
    distill: dict | None = None
    init: bool | str = False
    teacher: dict | None = None
    device: str = "cpu"
    precision: str = "fp32"
    compile: bool = False
    read_processes: int = 0

    def run(self, progress=None) -> list[dict]:
        """Train; rank 0 writes history.json and the weights. Returns the history."""
        ranks = distributed.from_env()
        device = resolve_device(self.device)
        if device.type == "cuda" and ranks.launched:
            device = torch.device("cuda", ranks.local)  # the task made its GPUs the visible ones
        if ranks.launched:
            logging.getLogger(__name__).info("rank %d of %d on %s", ranks.rank, ranks.world, device)
        with distributed.process_group(ranks, device):
            store = ImageStore(self.store, self.memory_budget)
            cache = TeacherCache(self.cache, self.memory_budget) if self.cache else None
            net, history = fit(self.model, self.kwargs, store, TrainSettings(**self.settings), Path(self.workdir),
                               cache=cache, distill=self.distill, init=self.init, progress=progress, device=device,
                               precision=Precision(self.precision), compile=self.compile,
                               teacher=self._teacher(len(store.classes)), ranks=ranks,
                               read_processes=self.read_processes)
            if ranks.main:
                atomic_write_json(Path(self.workdir) / "history.json", history, indent=1)
                models.save_weights(net, self.weights)
        return history

    def _teacher(self, classes: int) -> torch.nn.Module | None:
        if self.teacher is None:
            return None
        net = models.create(self.teacher["model"], classes, **self.teacher["kwargs"])
        return models.load_weights(net, self.teacher["weights"])

    def save(self, path: Path) -> Path:
        atomic_write_json(path, asdict(self), indent=1)
        return path


def main(path: str) -> None:
    """A rank's entry: its epoch lines and warnings go to its output, which torchrun gathers."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(name)s: %(message)s")
    TrainJob(**json.loads(Path(path).read_text())).run()


if __name__ == "__main__":
    main(sys.argv[1])

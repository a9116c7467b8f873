"""What every task of the pipeline shares: an identity fingerprint, an output folder and its lock."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import luigi
import torch

from cache.fingerprint import digest
from pipeline.device import Precision, resolve_device, resolve_precision
from pipeline.lock import folder_lock
from pipeline.progress import Progress
from tasks.check import Checked
from tasks.config import compute, paths


class Step(Checked, luigi.Task):
    """A task whose outputs live in work/<dataset>/<kind>-<fingerprint>/.

    Scheduling it checks the whole configuration first (tasks/check.py). The
    fingerprint covers the task's class, its `settings()` (everything besides its
    requirements that changes its output) and its requirements' fingerprints, so a
    changed setting anywhere upstream makes a new folder and reruns what depends on it.

    Subclasses do their work in `work()`; `run()` holds the folder's lock around it, so
    two runs started together on one work folder never write the same output at once.
    """

    dataset = luigi.Parameter(description="a name from luigi.cfg's [datasets] section")
    kind = "step"

    def settings(self) -> dict:
        return {}

    def work(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        with folder_lock(self.folder()):
            # Another run may have finished this output while we waited for the lock.
            if not self.complete():
                self.work()

    def fingerprint(self) -> str:
        if not hasattr(self, "_fingerprint"):
            upstream = [t.fingerprint() for t in luigi.task.flatten(self.requires())]
            self._fingerprint = digest(type(self).__name__, self.settings(), upstream)
        return self._fingerprint

    def folder(self) -> Path:
        return Path(paths().work) / self.dataset / f"{self.kind}-{self.fingerprint()[:12]}"

    def progress(self, total: int, text: str, every: float = 10.0) -> Progress:
        """A progress counter that drives Luigi's status message and percentage too and,
        off a terminal, logs a line at most every `every` seconds where Luigi logs."""
        def report(done: int, total: int, message: str) -> None:
            self.set_progress_percentage(round(100 * done / max(1, total)))
            self.set_status_message(message)
        return Progress(total, f"{self.task_id}: {text}", report, logging.getLogger("luigi-interface"), every)

    def device(self) -> torch.device:
        """The device this task's models run on. Call it in work() only: scheduling
        (requires, complete, output, settings) must not touch the GPU."""
        return resolve_device(compute().device)

    def precision(self) -> Precision:
        """[compute] precision, resolved from the device *setting* without touching CUDA,
        so fingerprints can hold it."""
        return resolve_precision(compute().precision, compute().device)

    def use_threads(self) -> None:
        if compute().threads:
            torch.set_num_threads(compute().threads)

    def write_settings(self) -> None:
        """Record what made this folder, for people reading the work tree."""
        self.folder().mkdir(parents=True, exist_ok=True)
        (self.folder() / "settings.json").write_text(json.dumps(
            {"task": self.task_id, "settings": self.settings(), "fingerprint": self.fingerprint()},
            indent=1, sort_keys=True, default=str))


def memory_budget() -> int:
    return int(compute().memory_budget_gb * (1 << 30))

"""What every task of the pipeline shares: an identity fingerprint, an output folder and its lock."""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path

import luigi
import numpy as np
import torch

from cache.storage.files import atomic_write_json, atomic_write_with, naming_full_disk
from cache.storage.fingerprint import digest
from pipeline.runtime.cost import recorded_cost
from pipeline.runtime.device import Precision, resolve_device, resolve_precision
from pipeline.runtime.gpus import hold_device
from pipeline.runtime.lock import folder_lock
from pipeline.runtime.progress import Progress
from pipeline.training.distributed import launch, launch_command
from pipeline.training.job import TrainJob
from tasks import interrupt
from tasks.check import ConfigCheckedTask
from tasks.config import compute, device_gpus, gpu_lock_dir, paths, train

ROOT = Path(__file__).resolve().parents[1]  # this checkout, which a data-parallel job's ranks import


class FingerprintedTask(ConfigCheckedTask, luigi.Task):
    """A task whose outputs live in work/<dataset>/<kind>-<fingerprint>/.

    Scheduling it checks the whole configuration first (tasks/check.py). The
    fingerprint covers the task's class, its `settings()` (everything besides its
    requirements that changes its output) and its requirements' fingerprints, so a
    changed setting anywhere upstream makes a new folder and reruns what depends on it.

    Subclasses do their work in `work()`; `run()` holds the folder's lock around it, so
    two runs started together on one work folder never write the same output at once.

    A task that runs models (`on_device`) on GPUs holds one GPU of its own while it works:
    Luigi's `gpu` resource keeps more such tasks from starting than there are GPUs, and a
    lock per GPU, taken in the task's own process, picks which (`held_devices`; a data-parallel
    training task holds one per rank).
    """

    dataset = luigi.Parameter(description="a name from luigi.cfg's [datasets] section")
    kind = "step"
    on_device = False
    held_devices: list[str] = []  # the GPUs this task holds while it works, e.g. ["cuda:1"]
    reached: str | None = None  # its last progress report, e.g. "epochs 3/8", for the line SIGTERM logs

    def settings(self) -> dict:
        return {}

    def complete(self) -> bool:
        """Its outputs exist, and its requirements are complete, all the way up. A damaged
        upstream output (its manifest removed by VerifyData or a failed read) makes every
        task below it incomplete, so `RunAll` reaches it and rebuilds it; the tasks below
        then find their own outputs still valid (run() asks again) and do no work. Cheap: a
        file check per task, never a read of the data."""
        return super().complete() and all(_outputs_exist(task) for task in luigi.task.flatten(self.requires()))

    def work(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        with interrupt.running(self), folder_lock(self.folder()):
            # Another run may have finished this output while we waited for the lock.
            if not self.complete():
                with (self.device_held(), naming_full_disk(self.folder()),  # zarr's ENOSPC names no file
                      recorded_cost(self.folder() / "cost.json", task=self.task_id, family=self.task_family)):
                    self.work()

    def gpus(self) -> list[str]:
        """The GPUs this task may run on; [] when it runs on the CPU. Never initialises CUDA:
        Luigi calls it (through process_resources) in the process its workers fork from."""
        return device_gpus() if self.on_device else []

    def gpu_count(self) -> int:
        """How many GPUs the task holds at once while it runs: Luigi's `gpu` resource it takes."""
        return 1 if self.gpus() else 0

    def process_resources(self) -> dict[str, int]:
        count = self.gpu_count()
        return {**self.resources, "gpu": count} if count else self.resources

    @contextmanager
    def device_held(self) -> Iterator[None]:
        """Hold gpu_count() of gpus() for the block (the first free ones), if the task runs on GPUs."""
        if not self.gpus():
            yield
            return
        with ExitStack() as held:
            self.held_devices = [held.enter_context(hold_device(self.gpus(), gpu_lock_dir(), self.task_id))
                                 for _ in range(self.gpu_count())]
            logging.getLogger("luigi-interface").info("%s runs on %s", self.task_id, ", ".join(self.held_devices))
            try:
                yield
            finally:
                self.held_devices = []

    def unread(self, requirement: FingerprintedTask) -> tuple[str, ...]:
        """Settings of `requirement` this task never reads: left out of the fingerprint it has
        here, so that changing them does not rerun this task. None by default."""
        return ()

    def fingerprint(self, unread: Collection[str] = ()) -> str:
        """The digest of the class, settings() and the requirements' fingerprints, leaving out
        the `unread` settings (those a task below never reads: its unread())."""
        key = tuple(sorted(unread))
        fingerprints = self.__dict__.setdefault("_fingerprints", {})
        if key not in fingerprints:
            settings = {name: value for name, value in self.settings().items() if name not in key}
            upstream = [t.fingerprint(self.unread(t)) for t in luigi.task.flatten(self.requires())]
            fingerprints[key] = digest(type(self).__name__, settings, upstream)
        return fingerprints[key]

    def folder(self) -> Path:
        return Path(paths().work) / self.dataset / f"{self.kind}-{self.fingerprint()[:12]}"

    def progress(self, total: int, text: str, every: float = 10.0) -> Progress:
        """A progress counter that drives Luigi's status message and percentage too and,
        off a terminal, logs a line at most every `every` seconds where Luigi logs."""
        def report(done: int, total: int, message: str) -> None:
            self.set_progress_percentage(round(100 * done / max(1, total)))
            self.set_status_message(message)
            self.reached = f"{text} {done}/{total}"
        return Progress(total, f"{self.task_id}: {text}", report, logging.getLogger("luigi-interface"), every)

    def device(self) -> torch.device:
        """The device this task's models run on. Call it in work() only: scheduling
        (requires, complete, output, settings) must not touch the GPU. On GPUs it is the
        one this task holds (device_held)."""
        return resolve_device(self.held_devices[0] if self.held_devices else compute().device)

    def precision(self) -> Precision:
        """[compute] precision, resolved from the device *setting* without touching CUDA,
        so fingerprints can hold it."""
        return resolve_precision(compute().precision, compute().device)

    def use_threads(self) -> None:
        if compute().threads:
            torch.set_num_threads(compute().threads)

    def write_settings(self) -> None:
        """Record what made this folder, for people reading the work tree."""
        atomic_write_json(self.folder() / "settings.json",
                          {"task": self.task_id, "settings": self.settings(), "fingerprint": self.fingerprint()},
                          indent=1, sort_keys=True, default=str)


class Training(FingerprintedTask):
    """A task that trains a model: in its own process, or data-parallel as [train] processes
    ranks on each of [train] nodes, started by torchrun (pipeline/training/distributed.py),
    one GPU each on GPUs."""

    resources = {"train": 1}
    on_device = True

    def gpu_count(self) -> int:
        return train().processes if self.gpus() else 0

    def how_it_runs(self) -> dict:
        """TrainSetup's settings of how the run goes, none of them part of its result's fingerprint."""
        return {"precision": self.precision().name, "compile": compute().compile,
                "read_processes": compute().read_processes, "checkpoint_minutes": train().checkpoint_minutes,
                "logger": train().logger}

    def run_training(self, job: TrainJob, text: str, epochs: int) -> None:
        """Run `job` here or, data-parallel, as ranks; its epochs reported as `text` either way."""
        progress = self.progress(epochs, text, every=0)
        if train().processes * train().nodes == 1:
            job.run(progress)
        else:
            self.run_ranks(job, text, progress)
        progress.close()

    def run_ranks(self, job: TrainJob, text: str, progress: Progress) -> None:
        """Run `job` as torchrun's ranks, rank 0's progress reported to `progress`; a SIGTERM
        of this process stops them too (tasks/interrupt.py)."""
        t = train()
        job = replace(job, device="cuda" if self.held_devices else job.device)  # each rank takes its own
        entry = ["pipeline.training.job", str(job.save(self.folder() / "job.json"))]
        logging.getLogger("luigi-interface").info("%s: %s, %d processes x %d nodes", self.task_id, text,
                                                  t.processes, t.nodes)
        launch(launch_command(entry, t.processes, t.nodes, t.rdzv_endpoint), self.folder() / "ranks.log",
               self.rank_env(), progress, interrupt.child)

    def rank_env(self) -> dict[str, str]:
        """The ranks' environment: this checkout first on the path, and the held GPUs visible."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        if self.held_devices:
            ids = [int(device.split(":")[1]) for device in self.held_devices]
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # cuda:K is the K-th of these, if set
            env["CUDA_VISIBLE_DEVICES"] = ",".join(visible.split(",")[i] if visible else str(i) for i in ids)
        return env


def _outputs_exist(task: luigi.Task) -> bool:
    """The task's outputs and its requirements', all the way up: FingerprintedTask.complete()
    without checking the configuration again at every task above (the caller has checked it)."""
    return luigi.Task.complete(task) and all(_outputs_exist(t) for t in luigi.task.flatten(task.requires()))


def read_json(path: Path, default):
    """A JSON record a task left (history.json, pass.json), or `default` where there is none
    (a given checkpoint has no history; a cache made before pass.json has no cost)."""
    return json.loads(path.read_text()) if path.exists() else default


def memory_budget() -> int:
    return int(compute().memory_budget_gb * (1 << 30))


class Evaluation(FingerprintedTask):
    """A model's test metrics (metrics.json) and its test logits (test_logits.npy, float32,
    the store's test rows in order), which the report's paired bootstrap resamples."""

    def output(self) -> dict[str, luigi.LocalTarget]:
        return {"metrics": luigi.LocalTarget(self.folder() / "metrics.json"),
                "logits": luigi.LocalTarget(self.folder() / "test_logits.npy")}

    def save(self, metrics: dict, logits: np.ndarray) -> None:
        atomic_write_with(self.output()["logits"].path, lambda file: np.save(file, np.asarray(logits, np.float32)))
        atomic_write_json(self.output()["metrics"].path, metrics, indent=1, default=_plain)


def _plain(value):
    return value.item() if isinstance(value, np.generic) else str(value)

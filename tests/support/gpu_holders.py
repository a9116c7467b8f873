"""Tasks that hold a GPU as the pipeline's do (tasks.base.FingerprintedTask, on_device) and record
which one and when, for `luigi --module support.gpu_holders GpuHolders --workers 3` with fake GPUs
([compute] gpus = fake:0,fake:1; tests/ on PYTHONPATH)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import luigi
import torch

from tasks.base import FingerprintedTask

HOLD = 1.0  # s each task keeps its GPU: long enough for the others to start meanwhile


class HoldGpu(FingerprintedTask):
    n = luigi.IntParameter()
    kind = "hold"
    on_device = True

    def settings(self) -> dict:
        return {"n": self.n}

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(self.folder() / "held.json")

    def work(self) -> None:
        start = time.monotonic()
        time.sleep(HOLD)
        record = {"device": self.held_devices[0], "start": start, "end": time.monotonic(), "pid": os.getpid(),
                  "cuda_initialised": torch.cuda.is_initialized()}
        with self.output().temporary_path() as tmp:
            Path(tmp).write_text(json.dumps(record))


class GpuHolders(luigi.WrapperTask):
    dataset = luigi.Parameter()
    count = luigi.IntParameter()

    def requires(self):
        return [HoldGpu(self.dataset, n) for n in range(self.count)]

"""Benchmark of the teacher cache against its alternatives, on a synthetic data set made
on the spot with a random-init teacher (nothing is downloaded).

Every metric is a ratio of two timings taken in this one run, with the same threads,
their repetitions interleaved (A B A B ...) so load that drifts during the run hits
both sides alike; the table gives the median ratio with its min and max.

    python -m pipeline.bench --json bench.json
    python -m pipeline.bench --device cuda --precision bf16 --json bench-gpu.json
    python -m pipeline.bench --calibrate      # the machine's figure, for any wall time
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from cache.storage.files import atomic_write_json
from pipeline.bench.cache_vs_online_measures import (
    cache_size_metrics,
    ddp_metrics,
    memory_metrics,
    precision_metrics,
    students_metrics,
    teacher_pass_metrics,
    training_metrics,
)
from pipeline.bench.fixtures import random_teacher, synthetic_store
from pipeline.bench.harness import calibration, log_step, machine, table
from pipeline.bench.runs import HELP, Bench, Settings
from pipeline.data.synthetic import CLASSES
from pipeline.runtime.device import PRECISIONS, device_problem

MEASURES = {"teacher_pass": teacher_pass_metrics, "cache_size": cache_size_metrics, "training": training_metrics,
            "precision": precision_metrics, "students": students_metrics, "ddp": ddp_metrics,
            "memory": memory_metrics}


def prepare(s: Settings, workdir: Path) -> Bench:
    """The image store and the teacher's weights (random init, saved as a checkpoint)."""
    synthetic_store(workdir / "store", s.per_class, s.image_size, s.seed, s.shard_rows)
    teacher = random_teacher(s.teacher, len(CLASSES), s.seed, workdir / "teacher.safetensors")
    return Bench(s, workdir / "store", workdir / "teacher.safetensors", workdir / "cache.zarr",
                 len(CLASSES), teacher.num_features)


def benchmark(s: Settings, workdir: Path, measures: tuple[str, ...] | None = None) -> dict:
    """The `measures` (names of MEASURES; default all, in its order) on a data set made in `workdir`."""
    measures = measures or tuple(MEASURES)
    tic = time.perf_counter()
    log_step(f"making the data set and teacher in {workdir}")
    b = prepare(s, workdir)
    images, train = b.counts()
    settings = {**asdict(s), "images": images, "train_images": train,
                "teacher_forwards_per_pass": images + train * s.views}
    device, precision = s.on()
    result = {"machine": machine(device, precision.name, s.threads), "settings": settings, "metrics": {}, "timings": {}}
    if "teacher_pass" not in measures:
        b.teacher_pass()  # the cache the others read
    for name, measure in MEASURES.items():
        if name not in measures:
            continue
        log_step(f"measuring: {name}")
        metrics, timings = measure(b)
        result["metrics"].update(metrics)
        result["timings"][name] = {k: np.asarray(v).tolist() if isinstance(v, np.ndarray) else v
                                   for k, v in timings.items()}
    result["machine"]["load_average_at_end"] = os.getloadavg()
    result["wall_seconds"] = time.perf_counter() - tic
    return result


def parse_args(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    """The Settings and the other flags of `argv`; exits on a device or precision this machine cannot run."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench",
                                     description=__doc__.split("\n\n")[0])
    for field in fields(Settings):
        flag, default = "--" + field.name.replace("_", "-"), field.default
        if isinstance(default, tuple):
            parser.add_argument(flag, nargs="+", default=list(default), help=HELP[field.name])
        else:
            parser.add_argument(flag, type=type(default), default=default, help=HELP[field.name])
    parser.add_argument("--json", type=Path, help="write every result, setting and timing here")
    parser.add_argument("--measure", nargs="+", choices=list(MEASURES), default=list(MEASURES),
                        help="only these measurements (default: all)")
    parser.add_argument("--workdir", type=Path, help="keep the data here (default: a temporary folder, removed)")
    parser.add_argument("--calibrate", action="store_true",
                        help="only print the machine's calibration figure "
                             "(convnext_atto img/s at 64 px, batch 64, 2 threads)")
    args = parser.parse_args(argv)
    if problem := device_problem(args.device):
        parser.error(f"--device {args.device}: {problem}")
    if args.precision not in PRECISIONS:
        parser.error(f"--precision {args.precision}: use {', '.join(PRECISIONS)}")
    values = {f.name: getattr(args, f.name) for f in fields(Settings)}
    return Settings(**{**values, "students": tuple(values["students"])}), args


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print its table, optionally write JSON; returns the results."""
    s, args = parse_args(argv)
    if args.calibrate:
        figure = calibration()
        print(f"calibration: convnext_atto forward {figure:.0f} img/s at 64 px, batch 64, 2 threads")
        return {"calibration_img_per_s": figure}
    torch.set_num_threads(s.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kd-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = benchmark(s, workdir, tuple(args.measure))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(result["metrics"]))
    print(f"wall time {result['wall_seconds']:.0f} s")
    if args.json:
        atomic_write_json(args.json, result, indent=1)
    return result


if __name__ == "__main__":
    main()

"""The report at ImageNet's validation shape: `write_report` for six students, each run
baseline and kd, and a teacher whose lead over each baseline is shown, on logits generated
on the spot (Gaussian noise plus a signal on the true class, a signal a run) for N test
images in C classes. Nearly all of its time is the paired bootstrap of top-1 and mAP.

    python -m pipeline.bench.report                                 # 50,000 x 1,000
    python -m pipeline.bench.report --images 5000 --classes 100     # a quick run
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from cache.storage.files import atomic_write_json
from pipeline.bench.harness import calibration, log_step, metric, seconds, table
from pipeline.evaluation.report import write_report

GOALS = {"report_seconds": ("<=", 60.0)}


def run_logits(labels: np.ndarray, classes: int, signal: float, rng: np.random.Generator) -> dict:
    """A run's test logits, float32 as evaluations keep them, and its top-1 (also as the
    chart's mAP: the report's own mAP is what is timed, not worth a second pass here)."""
    logits = rng.standard_normal((len(labels), classes), dtype=np.float32)
    logits[np.arange(len(labels)), labels] += signal
    top1 = float(np.mean(logits.argmax(1) == labels))
    return {"logits": logits, "metrics": {"top1": top1, "mAP": top1}}


def inputs(args: argparse.Namespace) -> tuple[dict, np.ndarray, list[dict]]:
    """The teacher, the test labels (the same number of images a class) and the students,
    their baseline signals spread over --signals and kd's --kd-signal above each."""
    rng = np.random.default_rng(args.seed)
    labels = np.arange(args.images) % args.classes
    teacher = {"name": "teacher", "model": "generated", "params": 0, "history": [],
               **run_logits(labels, args.classes, args.teacher_signal, rng)}
    students = [{"name": f"s{i}", "model": "generated", "params": 0,
                 "runs": {mode: run_logits(labels, args.classes, signal + lift, rng)
                          for mode, lift in (("baseline", 0.0), ("kd", args.kd_signal))}}
                for i, signal in enumerate(np.linspace(*args.signals, args.students))]
    return teacher, labels, students


def main(argv: list[str] | None = None) -> dict:
    """Time the report, print the seconds and the machine's figure, optionally write JSON."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=50_000, help="test images")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--students", type=int, default=6)
    parser.add_argument("--signals", type=float, nargs=2, default=[2.5, 3.5],
                        help="the students' baseline signals, lowest and highest")
    parser.add_argument("--kd-signal", type=float, default=0.25, help="kd's signal above its baseline's")
    parser.add_argument("--teacher-signal", type=float, default=4.0)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write every result and timing here")
    args = parser.parse_args(argv)
    teacher, labels, students = inputs(args)
    top1 = [teacher["metrics"]["top1"], *(run["metrics"]["top1"] for s in students for run in s["runs"].values())]
    log_step(f"{len(top1)} runs generated, top-1 {min(top1):.2f} to {max(top1):.2f}")
    workdir = Path(tempfile.mkdtemp(prefix="kd-report-bench-"))
    wall, cpu = [], []
    try:
        for _ in range(args.reps):
            tic = time.process_time()
            wall.append(seconds(lambda: write_report(workdir, "bench", [], teacher, labels, students,
                                                     resamples=args.resamples, seed=args.seed)))
            cpu.append(time.process_time() - tic)  # every thread's: on a loaded machine, beside the wall time
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {"metrics": {"report_seconds": metric("report_seconds", wall, GOALS),
                          "report_cpu_seconds": metric("report_cpu_seconds", cpu)}, "top1": top1,
              "settings": vars(args) | {"json": str(args.json)}, "calibration_img_per_s": calibration(),
              "load_average": os.getloadavg()}
    print(table(result["metrics"]))
    print(f"{args.images} test images x {args.classes} classes, {len(top1)} runs (top-1 {min(top1):.2f} to "
          f"{max(top1):.2f}), {args.resamples} resamples; calibration {result['calibration_img_per_s']:.0f} img/s, "
          f"load average {result['load_average'][0]:.1f}")
    if args.json:
        atomic_write_json(args.json, result, indent=1)
    return result


if __name__ == "__main__":
    main()
